"""The ``guardrails`` command line.

Exit codes: 0 success (an update accepted, a ledger verified); 1 not
accepted (rejected, inconclusive, error) or verification failed; 2 usage
error; 3 configuration error; 4 unknown or already resolved approval id.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

import click
import structlog

from ._config import Config, load_config
from ._decision import Decision
from ._errors import ConfigError, GuardrailsError
from .ledger import Ledger, LedgerEntry, SQLiteLedger

DEMO_GROUP = "guardrails.demos"
EXIT_NOT_ACCEPTED = 1
EXIT_CONFIG = 3
EXIT_UNKNOWN_ID = 4


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=Path("guardrails.toml"), show_default=True, help="The configuration file.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _config(path: Path) -> tuple[Config, Path]:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _ledger(path: Path) -> Ledger:
    from ._config import open_ledger

    config, root = _config(path)
    try:
        ledger: Ledger = open_ledger(config.ledger, root, str(path))
        return ledger
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _decision_table(decision: Decision) -> str:
    lines = [
        f"verdict     {decision.verdict.value}",
        f"proposal    {decision.proposal_id}  ({decision.kind}, from {decision.source})",
        f"parent      {decision.parent}",
        f"candidate   {decision.candidate}",
        f"entry       {decision.entry_index}",
        "findings:",
    ]
    for finding in decision.findings:
        mark = "pass" if finding.passed else "FAIL"
        lines.append(f"  {mark}  {finding.check:<18} {finding.message}")
    return "\n".join(lines)


def _exit_for(decision: Decision) -> None:
    if not decision.accepted:
        sys.exit(EXIT_NOT_ACCEPTED)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="guardrails-middleware")
def main() -> None:
    """Runtime guardrails for self-updating models.

    Exit codes: 0 success, 1 not accepted or not verified, 2 usage error,
    3 configuration error, 4 unknown or already resolved approval id.
    """
    # The command line is an application, so it may configure logging: log
    # lines go to stderr, keeping stdout for tables and --json output.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


@main.command()
@click.argument("name", default="digits")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".guardrails"), show_default=True,
              help="Where the demo leaves its SQLite ledger and blobs.")
def demo(name: str, workdir: Path) -> None:
    """Run a demo scenario (default: a self-training digits classifier)."""
    demos = {ep.name: ep for ep in entry_points(group=DEMO_GROUP)}
    if name not in demos:
        raise click.UsageError(f"no demo named {name!r}; installed demos: "
                               f"{', '.join(sorted(demos)) or 'none'}")
    try:
        run = demos[name].load()
    except ImportError as exc:
        _fail(f"demo {name!r} needs packages that are missing ({exc}); install them with: "
              "pip install 'guardrails-middleware[demo]'", EXIT_CONFIG)
    run(workdir=workdir)


@main.command()
@config_option
@json_option
def check(config_path: Path, as_json: bool) -> None:
    """Validate a configuration, its canary files and everything it names."""
    from .guard import Guard

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported below, once, with the summary
            guard = Guard.from_config(config_path)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)
    summary: dict[str, Any] = {"config": str(config_path), "cases": len(guard.canaries),
               "safety_cases": len(guard.canaries.safety),
               "frozen": list(guard.constraints.frozen), "fingerprint": guard.fingerprint(),
               "warnings": guard.suite_warnings}
    _emit(summary, as_json, f"ok: {config_path} ({summary['cases']} canary cases, "
                            f"{summary['safety_cases']} safety; fingerprint "
                            f"{summary['fingerprint'][:12]})"
                            + "".join(f"\nwarning: {w}" for w in guard.suite_warnings))


@main.command()
@json_option
def plugins(as_json: bool) -> None:
    """Installed plugins, what they provide and their settings."""
    from .plugin import installed_plugins

    infos = installed_plugins()
    if as_json:
        click.echo(json.dumps({n: i.model_dump(mode="json") for n, i in infos.items()}, indent=2))
        return
    for name, info in infos.items():
        if info.error:
            click.echo(f"{name:<18} BROKEN  {info.error}")
            continue
        settings = ", ".join((info.settings_schema or {}).get("properties", {}))
        click.echo(f"{name:<18} {'+'.join(info.provides):<20} {info.description}")
        click.echo(f"{'':<18} settings: {settings or 'none'}")


@main.group("config")
def config_group() -> None:
    """Work with the configuration file."""


@config_group.command("schema")
def config_schema() -> None:
    """Print the JSON schema of guardrails.toml (for editors)."""
    click.echo(json.dumps(Config.model_json_schema(), indent=2))


@main.command()
@config_option
@json_option
def status(config_path: Path, as_json: bool) -> None:
    """Served version, anchor, drift used and the last decisions."""
    from .gate import drift_distance

    config, _ = _config(config_path)
    ledger = _ledger(config_path)
    served, anchor = ledger.served_version(), ledger.anchor_version()
    drift = None
    if served and anchor:
        drift = drift_distance(ledger.get_state(anchor), ledger.get_state(served))
    recent = [d for d in (e.decision for e in ledger.entries(max(0, len(ledger) - 5)))
              if d is not None]
    data = {"served": served, "anchor": anchor, "drift": drift,
            "drift_budget": config.constraints.drift_budget, "entries": len(ledger),
            "pending": len(ledger.pending()),
            "recent": [{"verdict": d.verdict.value, "kind": d.kind, "proposal": d.proposal_id,
                        "entry": d.entry_index} for d in recent]}
    text = [f"served   {served}", f"anchor   {anchor}",
            f"drift    {drift if drift is None else round(drift, 4)} "
            f"(budget {config.constraints.drift_budget})",
            f"entries  {len(ledger)}   pending approvals {data['pending']}", "recent:"]
    text += [f"  #{d.entry_index:<5} {d.verdict.value:<13} {d.kind:<10} {d.proposal_id}"
             for d in recent]
    _emit(data, as_json, "\n".join(text))


@main.command()
@config_option
@json_option
def pending(config_path: Path, as_json: bool) -> None:
    """Proposals waiting for a human."""
    from .gate import expire_pending

    ledger = _ledger(config_path)
    expire_pending(ledger)
    waiting = ledger.pending()
    text = "\n".join(f"{p.id}  {p.kind:<10} from {p.source:<10} candidate {p.candidate[:12]}"
                     for p in waiting) or "no pending approvals"
    _emit([p.model_dump(mode="json") for p in waiting], as_json, text)


@main.command()
@click.argument("proposal_id")
@click.option("--approver", default="cli", show_default=True, help="Who approves (recorded).")
@config_option
@json_option
def approve(proposal_id: str, approver: str, config_path: Path, as_json: bool) -> None:
    """Approve a waiting proposal; it is served if its parent still is."""
    from .gate import approve_pending

    try:
        decision = approve_pending(_ledger(config_path), proposal_id, approver=approver)
    except (KeyError, ValueError) as exc:
        _fail(str(exc).strip('"'), EXIT_UNKNOWN_ID)
    _emit(decision.model_dump(mode="json"), as_json, _decision_table(decision))
    _exit_for(decision)


@main.command()
@click.argument("proposal_id")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
@click.option("--approver", default="cli", show_default=True, help="Who rejects (recorded).")
@config_option
@json_option
def reject(proposal_id: str, reason: str, approver: str, config_path: Path, as_json: bool) -> None:
    """Reject a waiting proposal."""
    from .gate import reject_pending

    try:
        decision = reject_pending(_ledger(config_path), proposal_id, reason=reason,
                                  approver=approver)
    except (KeyError, ValueError) as exc:
        _fail(str(exc).strip('"'), EXIT_UNKNOWN_ID)
    _emit(decision.model_dump(mode="json"), as_json, _decision_table(decision))


def _guarded(config_path: Path) -> Any:
    from .guard import Guard

    config, _ = _config(config_path)
    if config.client is None:
        _fail(f"{config_path}: this command builds the model; add a [client] section with "
              "factory = 'package.module:callable'", EXIT_CONFIG)
    try:
        return Guard.from_config(config_path).wrap(config.client.build())
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)


@main.command()
@click.argument("proposal_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@json_option
def review(proposal_file: Path, config_path: Path, as_json: bool) -> None:
    """Review a proposal (JSON: parent, patch, kind, rationale, source) and print the decision."""
    try:
        proposal = json.loads(proposal_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        _fail(f"{proposal_file}: not valid JSON ({exc})", EXIT_CONFIG)
    guarded = _guarded(config_path)
    with click.progressbar(length=len(guarded.guard.canaries), label="canaries",
                           file=sys.stderr, item_show_func=lambda status: status) as bar:

        def progress(done: int, planned: int, status: str) -> None:
            bar.length = planned
            bar.update(done - bar.pos, status)

        decision = guarded.propose(proposal, progress=progress)
    _emit(decision.model_dump(mode="json"), as_json, _decision_table(decision))
    _exit_for(decision)


@main.command()
@click.argument("version")
@config_option
@json_option
def rollback(version: str, config_path: Path, as_json: bool) -> None:
    """Serve an earlier accepted VERSION again (recorded as an operator decision)."""
    decision = _guarded(config_path).rollback(version)
    _emit(decision.model_dump(mode="json"), as_json, _decision_table(decision))
    _exit_for(decision)


@main.group()
def ledger() -> None:
    """Inspect and verify a ledger."""


def _filtered(entries: Iterator[LedgerEntry], verdict: str | None,
              version: str | None) -> Iterator[LedgerEntry]:
    for entry in entries:
        decision = entry.decision
        if verdict and (decision is None or decision.verdict.value != verdict):
            continue
        if version and (decision is None or not any(
                (v or "").startswith(version) for v in (decision.parent, decision.candidate))):
            continue
        yield entry


@ledger.command("keygen")
@click.argument("name")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Writes OUT.key (private, mode 0600) and OUT.pub.")
def ledger_keygen(name: str, out: Path) -> None:
    """Create an Ed25519 key pair NAME for signing ledger checkpoints."""
    from .ledger import SigningKey

    key = SigningKey.generate(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        key.save(out.with_suffix(".key"))
    except (ConfigError, FileExistsError) as exc:
        _fail(str(exc), EXIT_CONFIG)
    key.verifier.save(out.with_suffix(".pub"))
    click.echo(f"wrote {out.with_suffix('.key')} (keep it secret) and {out.with_suffix('.pub')}; "
               "set [ledger] signing_key in guardrails.toml")


@ledger.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--verdict", type=click.Choice(["accepted", "rejected", "inconclusive", "error"]))
@click.option("--version", "version", help="Only entries whose parent or candidate starts so.")
@json_option
def ledger_show(path: Path, verdict: str | None, version: str | None, as_json: bool) -> None:
    """List ledger entries as a table."""
    entries = list(_filtered(SQLiteLedger(path).entries(), verdict, version))
    rows = []
    for entry in entries:
        decision = entry.decision
        if decision is None:
            rows.append(f"#{entry.index:<5} event      {entry.body.get('event')}")
            continue
        deciding = decision.deciding_finding
        rows.append(f"#{entry.index:<5} {decision.verdict.value:<12} {decision.kind:<10} "
                    f"{(decision.candidate or '-')[:12]:<12} "
                    f"{deciding.check if deciding else ''}")
    _emit([e.model_dump(mode="json") for e in entries], as_json, "\n".join(rows) or "no entries")


@ledger.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--blobs", type=click.Path(file_okay=False, path_type=Path),
              help="Also check every blob of every accepted state in this folder.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A verifier (public) key file: check the ledger's signed checkpoint with it "
                   "instead of the key recorded in the ledger; fail if there is none.")
def ledger_verify(path: Path, blobs: Path | None, key_file: Path | None) -> None:
    """Verify a SQLite ledger; exit 1 and name the first bad entry if it does not verify.

    Checks the hash chain, the Merkle tree against the entries and, when a
    key is given or recorded, the last signed checkpoint.
    """
    from .blobs import FileBlobStore
    from .ledger import Checkpoint, VerifierKey

    key = None
    if key_file is not None:
        try:
            key = VerifierKey.load(key_file)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
    try:
        ledger = SQLiteLedger(path, verifier_key=key)
        report = ledger.verify(FileBlobStore(blobs) if blobs else None)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    if not report.ok:
        _fail(f"FAILED: {report.problem}", EXIT_NOT_ACCEPTED)
    _, root = ledger.root()
    line = f"ok: {report.size} entries, serving {report.served}, tree root {root.hex()}"
    note = ledger.latest_checkpoint()
    if note is not None and (key is not None or ledger.verifier_key is not None):
        checkpoint = Checkpoint.read(note, where=str(path))
        line += f"; signed checkpoint of {checkpoint.size} entries verified"
    click.echo(line)


@ledger.command("prove")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("entry", type=int)
def ledger_prove(path: Path, entry: int) -> None:
    """Print the inclusion proof of ENTRY in the ledger's Merkle tree as JSON.

    Hashes are lowercase hex; ``checkpoint`` is the last signed checkpoint
    note, or null if the ledger does not sign.
    """
    try:
        ledger = SQLiteLedger(path)
        proof = ledger.prove(entry)
    except IndexError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    data = json.loads(proof.model_dump_json())
    data["checkpoint"] = ledger.latest_checkpoint()
    click.echo(json.dumps(data, indent=2))


@main.group("db")
def db_group() -> None:
    """Manage a PostgreSQL ledger (the store several replicas share).

    URL defaults to ``[ledger] path`` of the configuration file.
    """


def _postgres_target(url: str | None, config_path: Path, schema: str | None
                     ) -> tuple[str, str | None]:
    from .ledger import is_postgres_url

    if url is None:
        config, _ = _config(config_path)
        url, schema = config.ledger.path, schema or config.ledger.schema_
        if not is_postgres_url(url):
            _fail(f"{config_path}: [ledger] path is the SQLite file {url!r}, which needs no "
                  "'db' command (it is upgraded when opened); give a postgresql:// URL",
                  EXIT_CONFIG)
    elif not is_postgres_url(url):
        raise click.UsageError(f"{url!r} is not a postgresql:// URL")
    return url, schema


url_argument = click.argument("url", required=False)
schema_option = click.option("--schema", help="The PostgreSQL schema of the ledger's tables.")


@db_group.command("upgrade")
@url_argument
@schema_option
@config_option
def db_upgrade(url: str | None, schema: str | None, config_path: Path) -> None:
    """Create or migrate the ledger's tables to this library's schema version."""
    from .ledger import PostgresLedger, redact

    dsn, schema = _postgres_target(url, config_path, schema)
    try:
        before, after = PostgresLedger.upgrade(dsn, schema=schema)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)
    where = redact(dsn) + (f" (schema {schema})" if schema else "")
    if before == after:
        click.echo(f"ok: {where} is at schema version {after}; nothing to do")
    else:
        click.echo(f"ok: {where} upgraded from schema version {before} to {after}")


@db_group.command("status")
@url_argument
@schema_option
@config_option
@json_option
def db_status(url: str | None, schema: str | None, config_path: Path, as_json: bool) -> None:
    """Schema version, entries, served version and anchor of a PostgreSQL ledger."""
    from .ledger import PostgresLedger

    dsn, schema = _postgres_target(url, config_path, schema)
    try:
        ledger = PostgresLedger(dsn, schema=schema, migrate=False)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)
    try:
        data = {"store": repr(ledger), "schema_version": ledger.schema_version,
                "entries": len(ledger), "served": ledger.served_version(),
                "anchor": ledger.anchor_version(), "origin": ledger.origin}
    finally:
        ledger.close()
    _emit(data, as_json, "\n".join(f"{key:<15} {value}" for key, value in data.items()))


@db_group.command("verify")
@url_argument
@schema_option
@config_option
@click.option("--blobs", type=click.Path(file_okay=False, path_type=Path),
              help="Also check every blob of every accepted state in this folder.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A verifier (public) key file to check the signed checkpoint with.")
def db_verify(url: str | None, schema: str | None, config_path: Path, blobs: Path | None,
              key_file: Path | None) -> None:
    """Verify a PostgreSQL ledger as 'ledger verify' does a SQLite file; exit 1 if it fails."""
    from .blobs import FileBlobStore
    from .ledger import PostgresLedger, VerifierKey

    dsn, schema = _postgres_target(url, config_path, schema)
    try:
        key = None if key_file is None else VerifierKey.load(key_file)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    try:
        ledger = PostgresLedger(dsn, schema=schema, migrate=False, verifier_key=key)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    try:
        report = ledger.verify(FileBlobStore(blobs) if blobs else None)
        if not report.ok:
            _fail(f"FAILED: {report.problem}", EXIT_NOT_ACCEPTED)
        _, root = ledger.root()
    finally:
        ledger.close()
    click.echo(f"ok: {report.size} entries, serving {report.served}, tree root {root.hex()}")


# -- guardrails report, transparency, serve: registered here, bodies in guardrails/report/ ------

ledger_path_option = click.option(
    "--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
    help="A SQLite ledger file to read instead of the configuration's.")
blobs_path_option = click.option(
    "--blobs", "blobs_path", type=click.Path(file_okay=False, path_type=Path),
    help="The blob store folder (default: the configuration's, or the demo's).")


@main.command()
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.html"), show_default=True, help="The HTML file to write.")
@click.option("--public-inputs", "with_inputs", is_flag=True,
              help="Show public canary cases' inputs (needs [guard] capture_content).")
@config_option
@ledger_path_option
@blobs_path_option
def report(out: Path, with_inputs: bool, config_path: Path, ledger_path: Path | None,
           blobs_path: Path | None) -> None:
    """Write a self-contained HTML report of the ledger (opens from disk, no network)."""
    from .report._commands import run_report

    run_report(config_path, ledger_path, blobs_path, out, with_inputs)


@main.command()
@config_option
@ledger_path_option
@json_option
def transparency(config_path: Path, ledger_path: Path | None, as_json: bool) -> None:
    """What users may be told about the served model: self-improving, frozen, drift, last change."""
    from .report._commands import run_transparency

    run_transparency(config_path, ledger_path, as_json)


@main.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
@config_option
@ledger_path_option
@blobs_path_option
def serve(port: int, config_path: Path, ledger_path: Path | None,
          blobs_path: Path | None) -> None:
    """A local review page on 127.0.0.1: the report, live, with approve and reject."""
    from .report._serve import serve_command

    serve_command(config_path, ledger_path, blobs_path, port)
