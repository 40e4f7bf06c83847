"""The ``guardrails`` command line.

Exit codes (docs/configuration.md): 0 success (an update accepted, a ledger
verified); 1 not accepted (rejected, inconclusive, error), a ledger that does
not verify or is not a ledger, or an unexpected error; 2 usage error (bad
arguments, an unknown or ambiguous id prefix); 3 configuration error (the
configuration, a file it names, a proposal file, the client factory); 4
unknown or already resolved approval id; 5 the ledger is locked by another
writer beyond the configured timeout. Nothing a user can cause prints a
traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from . import __version__
from ._errors import ConfigError, GuardrailsError, LedgerIntegrityError

# The configuration, the ledger and structlog are imported where a command needs them, so
# `guardrails --version` and `--help` start in the time of click alone (issue 22).
if TYPE_CHECKING:
    from ._config import Config
    from ._decision import Decision, Finding
    from .ledger import Ledger, LedgerEntry, SQLiteLedger

DEMO_GROUP = "guardrails.demos"
EXIT_NOT_ACCEPTED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_UNKNOWN_ID = 4
EXIT_BUSY = 5
APPROVAL_CHECK = "human_approval"
"""The finding the gate's approval step writes (``guardrails.gate``): waiting when failed,
the human's approval when passed."""


def _fail(message: str, code: int) -> NoReturn:
    context = click.get_current_context(silent=True)
    if context is not None and context.find_root().params.get("debug") and sys.exc_info()[0]:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _exit_code(exc: Exception) -> int:
    """The documented exit code for an error a command did not handle itself."""
    from .ledger import IdPrefixError, LedgerBusyError

    if isinstance(exc, LedgerBusyError):
        return EXIT_BUSY
    if isinstance(exc, IdPrefixError):
        return EXIT_USAGE
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    return EXIT_NOT_ACCEPTED


class _Main(click.Group):
    """The root group: turns every exception into one ``error:`` line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except UnicodeDecodeError as exc:
            if ctx.params.get("debug"):
                raise
            from ._config import not_utf8

            _fail(not_utf8(getattr(exc, "filename", "a file"), exc), EXIT_CONFIG)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            if isinstance(exc, GuardrailsError):
                _fail(str(exc), _exit_code(exc))
            _fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the "
                  "traceback, and please report it)", EXIT_NOT_ACCEPTED)


config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=Path("guardrails.toml"), show_default=True, help="The configuration file.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
no_verify_option = click.option(
    "--no-verify", is_flag=True,
    help="Show the entries without verifying the ledger first (forensic reading of a damaged "
         "or tampered ledger; what it shows may be forged).")


def _config(path: Path) -> tuple[Config, Path]:
    from ._config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)


def _ledger(path: Path) -> Ledger:
    """The configured ledger, opened for writing (commands that decide)."""
    from ._config import open_ledger

    config, root = _config(path)
    ledger: Ledger = open_ledger(config.ledger, root, str(path))
    return ledger


def _reader(path: Path) -> Ledger:
    """The configured ledger, opened read-only: nothing is created, locked or written."""
    from ._config import open_ledger

    config, root = _config(path)
    ledger: Ledger = open_ledger(config.ledger, root, str(path), read_only=True)
    return ledger


def _verified(ledger: Ledger, where: str, no_verify: bool) -> None:
    """Exit 1, loudly, unless the ledger verifies (chain, tree, checkpoint); ``--no-verify`` warns."""
    if len(ledger) == 0:
        _fail(f"{where}: not a guardrails ledger: it holds no entries, not even the initial "
              "state; if this was your ledger, it was emptied: restore it from a backup",
              EXIT_NOT_ACCEPTED)
    if no_verify:
        click.echo(f"warning: {where} was NOT verified (--no-verify); entries may be forged",
                   err=True)
        return
    report = ledger.verify()
    if not report.ok:
        _fail(f"THE LEDGER DOES NOT VERIFY: {report.problem}\nWhat it records cannot be "
              "trusted, so nothing is shown; read it with --no-verify for forensics, and "
              "restore it from a backup", EXIT_NOT_ACCEPTED)


def _approval(decision: Decision) -> Finding | None:
    """The finding of the human who approved an accepted decision, if one did."""
    if not decision.accepted:
        return None
    return next((f for f in decision.findings if f.check == APPROVAL_CHECK and f.passed), None)


def _is_waiting(decision: Decision) -> bool:
    from ._decision import Verdict

    return decision.verdict is Verdict.INCONCLUSIVE and any(
        f.check == APPROVAL_CHECK and not f.passed and "pending" in f.evidence
        for f in decision.findings)


_RESOLVED: dict[str, str] = {}
"""Approval id -> ``approved``/``rejected`` for the ledger being shown (``_note_resolved``)."""


def _note_resolved(ledger: Ledger) -> None:
    """Remember which approvals were resolved, so a past wait is not shown as pending."""
    _RESOLVED.update({p.id: p.status for p in ledger.pending(include_resolved=True)
                      if p.status != "pending"})


def _status_word(decision: Decision) -> str:
    """``accepted``, ``approved`` (by a human), ``pending`` (waiting for one), ``waited``
    (waited, since resolved) or the verdict."""
    if _approval(decision) is not None:
        return "approved"
    if _is_waiting(decision):
        return "waited" if decision.proposal_id in _RESOLVED else "pending"
    return decision.verdict.value


def _summary(decision: Decision) -> str:
    """One phrase saying why a decision is what it is."""
    approval = _approval(decision)
    if approval is not None:
        overrode = [f.check for f in decision.findings if not f.passed]
        return (f"{approval.message} at {decision.decided_at:%Y-%m-%d %H:%M:%SZ}"
                + (f"; overrode {', '.join(overrode)}" if overrode else ""))
    if _is_waiting(decision):
        resolved = _RESOLVED.get(decision.proposal_id or "")
        return (f"waited for human approval, then {resolved} (see the later entry)" if resolved
                else "waiting for human approval")
    deciding = decision.deciding_finding
    return "" if deciding is None else f"{deciding.check}: {deciding.message}"


def _mark(decision: Decision, finding: Finding) -> str:
    if finding.passed:
        return "pass"
    if _approval(decision) is not None:
        return "over"  # failed, and a human accepted the change anyway
    if _is_waiting(decision) and finding.check == APPROVAL_CHECK:
        return "wait"
    return "FAIL"


def _decision_table(decision: Decision) -> str:
    verdict = decision.verdict.value
    if _approval(decision) is not None:
        verdict = f"accepted by human approval ({_summary(decision)})"
    elif _is_waiting(decision):
        verdict = f"pending: waiting for human approval (guardrails approve " \
                  f"{(decision.proposal_id or '')[:12]})"
    lines = [
        f"verdict     {verdict}",
        f"proposal    {decision.proposal_id}  ({decision.kind}, from {decision.source})",
        f"parent      {decision.parent}",
        f"candidate   {decision.candidate}",
        f"entry       {decision.entry_index}",
        "findings:",
    ]
    for finding in decision.findings:
        lines.append(f"  {_mark(decision, finding)}  {finding.check:<18} {finding.message}")
    return "\n".join(lines)


def _decision_data(decision: Decision) -> dict[str, Any]:
    data = decision.model_dump(mode="json")
    data["status"] = _status_word(decision)
    return data


def _exit_for(decision: Decision) -> None:
    if not decision.accepted:
        sys.exit(EXIT_NOT_ACCEPTED)


def _configure_output(verbose: int) -> None:
    """Library warnings and info logs stay quiet unless asked for with -v (-vv: debug)."""
    import structlog

    level = {0: logging.ERROR, 1: logging.INFO}.get(verbose, logging.DEBUG)
    # The command line is an application, so it may configure logging: log lines go to
    # stderr, keeping stdout for tables and --json output.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr),
                        wrapper_class=structlog.make_filtering_bound_logger(level))
    if verbose == 0:
        warnings.simplefilter("ignore")


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, package_name="guardrails-middleware")
@click.option("-v", "--verbose", count=True,
              help="Show library warnings and info logs (-vv: debug logs).")
@click.option("--debug", is_flag=True, help="Show the Python traceback of an error.")
def main(verbose: int, debug: bool) -> None:
    """Runtime guardrails for self-updating models.

    Exit codes: 0 success, 1 not accepted or not verified, 2 usage error
    (including an unknown or ambiguous id prefix), 3 configuration error,
    4 unknown or already resolved approval id, 5 ledger locked by another
    writer.
    """
    _configure_output(verbose)


def _demo_summary(module: str) -> str:
    """The first paragraph of a demo module's docstring, read without importing it (a demo
    imports its data science stack); the module name when there is none."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
        doc = ast.get_docstring(ast.parse(source)) or ""
    except (ImportError, OSError, SyntaxError, ValueError):
        doc = ""
    return " ".join(doc.strip().split("\n\n")[0].split()) or module


@main.command()
@click.argument("name", default="digits")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".guardrails"), show_default=True,
              help="Where the demo leaves its SQLite ledger and blobs.")
@click.option("--list", "list_", is_flag=True, help="Name the installed demos and exit.")
def demo(name: str, workdir: Path, list_: bool) -> None:
    """Run a demo scenario (default: a self-training digits classifier); see docs/scenarios.md."""
    from importlib.metadata import entry_points

    demos = {ep.name: ep for ep in entry_points(group=DEMO_GROUP)}
    if list_:
        for ep_name in sorted(demos):
            click.echo(f"{ep_name:<16} {_demo_summary(demos[ep_name].module)}")
        return
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
    """Validate a configuration, its canary files and everything it names.

    Imports the [client] factory (exit 3 if it cannot be imported or does not
    take the configured args) and builds the client when it can; a client that
    cannot be built here (no network, no API key) is reported, not an error.
    """
    from ._config import guard_kwargs
    from .guard import Guard

    config, root = _config(config_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, once, with the summary
        # Without the stores: checking creates no ledger and no blob folder.
        guard = Guard(**guard_kwargs(config, root, str(config_path), stores=False))
    ledger, served = _check_ledger(config, root, str(config_path))
    if served is not None:  # what Guard.wrap checks the pointers against: the served state
        version, state = served
        guard.constraints.check_pointers(state, f"the state the ledger serves ({version[:12]})")
        ledger += "; every pointer resolves in the state it serves"
    client = _check_client(config, root, guard, pointers=served is None)
    summary: dict[str, Any] = {"config": str(config_path), "cases": len(guard.canaries),
               "safety_cases": len(guard.canaries.safety),
               "frozen": list(guard.constraints.frozen), "fingerprint": guard.fingerprint(),
               "client": client, "ledger": ledger, "warnings": guard.suite_warnings}
    jail_line = _check_jail(guard, summary)
    _emit(summary, as_json, f"ok: {config_path} ({summary['cases']} canary cases, "
                            f"{summary['safety_cases']} safety; fingerprint "
                            f"{summary['fingerprint'][:12]})\nclient: {client}\nledger: {ledger}"
                            + jail_line
                            + "".join(f"\nwarning: {w}" for w in guard.suite_warnings))


def _check_ledger(config: Config, root: Path, source: str
                  ) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """What ``check`` found of the ledger, opened read-only (never created), and the version
    and state it serves, if any; a ledger that cannot be opened here (a server out of reach)
    is reported, not an error."""
    from ._config import open_ledger
    from .ledger import is_postgres_url, redact

    path = config.ledger.path
    remote = is_postgres_url(path)
    name = redact(path) if remote else str(root / path)
    if not remote and not (root / path).is_file():
        return f"{name} does not exist yet (the first run creates it)", None
    try:
        ledger = open_ledger(config.ledger, root, source, read_only=True)
    except GuardrailsError as exc:
        return f"{name} could not be opened here ({exc})", None
    try:
        version = ledger.served_version()
        line = (f"{name}: {len(ledger)} entries, serving "
                f"{version[:12] if version else 'nothing yet'} (opened read-only)")
        if version is None or not ledger.has_state(version):
            return line, None
        return line, (version, ledger.get_state(version))
    finally:
        ledger.close()


def _check_client(config: Config, root: Path, guard: Any, *, pointers: bool = True) -> str:
    """What ``check`` found of the [client]: imported and built, or why it was not built.

    With ``pointers`` (no ledger serving a state yet), a built client's state resolves every
    frozen, mutable and drift pointer (exit 3 naming the pointer and the closest path
    otherwise), as ``Guard.wrap`` requires."""
    if config.client is None:
        return "none configured (review and rollback need a [client] section)"
    config.client.load_factory(root)  # ConfigError, exit 3: the configuration is wrong
    try:
        built = config.client.build(root)
    except ConfigError as exc:
        return f"{config.client.factory} imports, but was not built here: {exc}"
    if not pointers:
        return f"{config.client.factory} imported and built"
    try:
        state = built.snapshot()
    except Exception as exc:
        return (f"{config.client.factory} built, but its state could not be read here "
                f"({type(exc).__name__}: {exc}); pointers not checked")
    guard.constraints.check_pointers(state, f"the state of {config.client.factory}")
    return f"{config.client.factory} imported and built; every pointer resolves in its state"


def _check_jail(guard: Any, summary: dict[str, Any]) -> str:
    """What jail this machine gives a process sandbox; exits EXIT_CONFIG when a strict one
    cannot be had here (every review would end in an error)."""
    if guard.process_sandbox is None:
        return ""
    from .sandbox import how_to_allow, jail_support

    isolation = guard.process_sandbox.limits.jail.isolation
    support = jail_support()
    summary["jail"] = {"isolation": isolation, **support}
    if isolation == "off":
        return "\njail: isolation = \"off\" (resource limits only)"
    if "error" in support:
        _fail(f"the sandbox's jail cannot start on this machine: {support['error']}", EXIT_CONFIG)
    missing = support["missing"]
    if isolation == "strict" and missing:
        _fail(f"[sandbox] isolation = \"strict\" needs the {', '.join(missing)} layer(s), which "
              f"this machine refuses; to allow {missing[0]}: {how_to_allow(missing[0])}; or set "
              "isolation = \"best_effort\"", EXIT_CONFIG)
    return (f"\njail: {isolation}, {len(support['layers'])} layers on this machine"
            + (f"; missing: {', '.join(missing)}" if missing else "; none missing"))


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
    from ._config import Config

    click.echo(json.dumps(Config.model_json_schema(), indent=2))


@main.command()
@config_option
@json_option
@no_verify_option
def status(config_path: Path, as_json: bool, no_verify: bool) -> None:
    """Served version, anchor, drift used, the last decisions and the last change of the suite
    or the rule (verifies the ledger first)."""
    from .gate import drift_distance, last_suite_change

    config, _ = _config(config_path)
    ledger = _reader(config_path)
    _verified(ledger, config.ledger.path, no_verify)
    _note_resolved(ledger)
    served, anchor = ledger.served_version(), ledger.anchor_version()
    drift = None
    if served and anchor:
        drift = drift_distance(ledger.get_state(anchor), ledger.get_state(served))
    window = list(ledger.entries(max(0, len(ledger) - 5)))
    recent = [d for d in (e.decision for e in window) if d is not None]
    last_change = last_suite_change(ledger)  # however far back: the bar in force since then
    changes = [] if last_change is None else [last_change]
    data = {"served": served, "anchor": anchor, "drift": drift, "verified": not no_verify,
            "drift_budget": config.constraints.drift_budget, "entries": len(ledger),
            "pending": len(ledger.pending()),
            "recent": [{"verdict": d.verdict.value, "status": _status_word(d), "kind": d.kind,
                        "proposal": d.proposal_id, "entry": d.entry_index,
                        "why": _summary(d)} for d in recent],
            "suite_changed": [{"entry": e.index, "changed": e.body.get("changed")}
                              for e in changes]}
    text = [f"served   {served}", f"anchor   {anchor}",
            f"drift    {drift if drift is None else round(drift, 4)} "
            f"(budget {config.constraints.drift_budget})",
            f"entries  {len(ledger)}   pending approvals {data['pending']}"
            + ("" if no_verify else "   ledger verified"), "recent:"]
    text += [f"  #{d.entry_index:<5} {_status_word(d):<13} {d.kind:<10} "
             f"{(d.proposal_id or '-')[:12]:<12} {_summary(d)}" for d in recent]
    text += [f"suite    changed at entry #{e.index}:{_changes(e.body)}" for e in changes]
    _emit(data, as_json, "\n".join(text))


@main.command()
@config_option
@json_option
def pending(config_path: Path, as_json: bool) -> None:
    """Proposals waiting for a human (read-only: expired ones are marked, not resolved)."""
    waiting = _reader(config_path).pending()
    now = time.time()

    def line(p: Any) -> str:
        expired = p.expires_at is not None and p.expires_at <= now
        return (f"{p.id[:12]}  {p.kind:<10} from {p.source:<10} candidate {p.candidate[:12]}"
                + ("  EXPIRED (rejected at the next approve, reject or review)" if expired
                   else ""))

    text = "\n".join(line(p) for p in waiting) or "no pending approvals"
    _emit([p.model_dump(mode="json") for p in waiting], as_json, text)


def _approval_id(ledger: Ledger, prefix: str) -> str:
    """The full id of the approval ``prefix`` names; exit 4 if none, 2 if ambiguous."""
    from .ledger import IdPrefixError, resolve_proposal

    try:
        return resolve_proposal(ledger, prefix, pending_only=False)
    except IdPrefixError as exc:
        _fail(str(exc), EXIT_USAGE if exc.matches else EXIT_UNKNOWN_ID)


@main.command()
@click.argument("proposal_id")
@click.option("--approver", default="cli", show_default=True, help="Who approves (recorded).")
@config_option
@json_option
def approve(proposal_id: str, approver: str, config_path: Path, as_json: bool) -> None:
    """Approve a waiting proposal (an id or a prefix); it is served if its parent still is."""
    from .gate import approve_pending

    ledger = _ledger(config_path)
    try:
        decision = approve_pending(ledger, _approval_id(ledger, proposal_id), approver=approver)
    except (KeyError, ValueError) as exc:
        _fail(str(exc).strip('"'), EXIT_UNKNOWN_ID)
    _emit(_decision_data(decision), as_json, _decision_table(decision))
    _exit_for(decision)


@main.command()
@click.argument("proposal_id")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
@click.option("--approver", default="cli", show_default=True, help="Who rejects (recorded).")
@config_option
@json_option
def reject(proposal_id: str, reason: str, approver: str, config_path: Path, as_json: bool) -> None:
    """Reject a waiting proposal (an id or a prefix)."""
    from .gate import reject_pending

    ledger = _ledger(config_path)
    try:
        decision = reject_pending(ledger, _approval_id(ledger, proposal_id), reason=reason,
                                  approver=approver)
    except (KeyError, ValueError) as exc:
        _fail(str(exc).strip('"'), EXIT_UNKNOWN_ID)
    _emit(_decision_data(decision), as_json, _decision_table(decision))


def _client_settings(config_path: Path) -> tuple[Any, Path]:
    """The [client] section and the configuration's folder; exit 3 without one."""
    config, root = _config(config_path)
    if config.client is None:
        _fail(f"{config_path}: this command builds the model; add a [client] section with "
              "factory = 'package.module:callable'", EXIT_CONFIG)
    return config.client, root


def _guarded(config_path: Path) -> Any:
    from .guard import Guard

    client_settings, root = _client_settings(config_path)
    try:
        client = client_settings.build(root)
        return Guard.from_config(config_path).wrap(client)
    except ConfigError as exc:
        _fail(f"{config_path}: {exc}", EXIT_CONFIG)


def _read_proposal(proposal_file: Path, config_path: Path) -> dict[str, Any]:
    """The proposal file as a checked ``UpdateProposal`` dump; exit 3 naming the problem.

    Checked before the model is built, so a file that is not a proposal is a usage
    mistake that writes nothing to the ledger. A short ``parent`` is resolved.
    """
    from pydantic import ValidationError

    from ._config import not_utf8
    from .gate import UpdateProposal
    from .ledger import resolve_version

    try:
        raw = json.loads(proposal_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        _fail(not_utf8(proposal_file, exc), EXIT_CONFIG)
    except json.JSONDecodeError as exc:
        _fail(f"{proposal_file}: not valid JSON ({exc})", EXIT_CONFIG)
    if not isinstance(raw, dict):
        _fail(f"{proposal_file}: a proposal is a JSON object with parent, patch and optionally "
              f"kind, rationale, source; this file holds a {type(raw).__name__}", EXIT_CONFIG)
    parent = raw.get("parent")
    if isinstance(parent, str) and 0 < len(parent) < 64:
        reader = _reader(config_path)
        raw["parent"] = resolve_version(reader, parent)
    try:
        return UpdateProposal.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        _fail(f"not a proposal, nothing was recorded:\n{_problems(exc, proposal_file)}",
              EXIT_CONFIG)


def _problems(exc: Any, source: Path) -> str:
    """One line per problem; a list's "too short" is dropped when its items failed (they
    are why it ended up empty, and saying both misleads)."""
    errors = exc.errors()
    lines = []
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] == "too_short" and any(
                tuple(e["loc"])[:len(loc)] == loc and len(e["loc"]) > len(loc) for e in errors):
            continue
        key = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "missing":
            lines.append(f"{source}: {key!r} is required; add it")
        elif error["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key {key!r}; a proposal has parent, patch, kind, "
                         "rationale, source, id, signature, created_at")
        else:
            lines.append(f"{source}: {key!r}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


class _Progress:
    """Canary progress on stderr, only on a terminal, always ending its line."""

    def __init__(self, planned: int) -> None:
        self._bar = click.progressbar(length=max(planned, 1), label="canaries", file=sys.stderr)
        self._on = sys.stderr.isatty()

    def __enter__(self) -> Callable[[int, int, str], None]:
        if self._on:
            self._bar.__enter__()
        return self.update

    def update(self, done: int, planned: int, status: str) -> None:
        if self._on:
            self._bar.length = max(planned, 1)
            self._bar.update(done - self._bar.pos)

    def __exit__(self, *exc: object) -> None:
        if self._on:
            self._bar.__exit__(None, None, None)
            click.echo("", err=True)  # the decision never starts on the bar's line


@main.command()
@click.argument("proposal_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option
@json_option
def review(proposal_file: Path, config_path: Path, as_json: bool) -> None:
    """Review a proposal (JSON: parent, patch, kind, rationale, source) and print the decision.

    A file that is not a proposal exits 3 and records nothing; PARENT may be a
    prefix of the version id.
    """
    _client_settings(config_path)
    proposal = _read_proposal(proposal_file, config_path)
    guarded = _guarded(config_path)
    with _Progress(len(guarded.guard.canaries)) as progress:
        decision = guarded.propose(proposal, progress=progress)
    _emit(_decision_data(decision), as_json, _decision_table(decision))
    _exit_for(decision)


@main.command()
@click.argument("version")
@config_option
@json_option
def rollback(version: str, config_path: Path, as_json: bool) -> None:
    """Serve an earlier accepted VERSION again (recorded as an operator decision).

    VERSION may be a prefix, as status and ledger show print it; an unknown or
    ambiguous prefix exits 2 and records nothing.
    """
    from .ledger import resolve_version

    reader = _reader(config_path)
    config, _ = _config(config_path)
    _verified(reader, config.ledger.path, no_verify=False)
    full = resolve_version(reader, version, accepted_only=True)
    _close(reader)
    decision = _guarded(config_path).rollback(full)
    _emit(_decision_data(decision), as_json, _decision_table(decision))
    _exit_for(decision)


def _close(ledger: Any) -> None:
    close = getattr(ledger, "close", None)
    if close is not None:
        close()


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


def _open_file(path: Path, key: Any = None) -> SQLiteLedger:
    """A SQLite ledger file opened read-only: missing, empty or foreign files exit 1."""
    from .ledger import SQLiteLedger

    try:
        return SQLiteLedger(path, read_only=True, verifier_key=key)
    except LedgerIntegrityError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)


def _show_row(entry: LedgerEntry) -> str:
    decision = entry.decision
    if decision is None:
        return (f"#{entry.index:<5} event        {entry.body.get('event')}"
                + _changes(entry.body))
    return (f"#{entry.index:<5} {_status_word(decision):<12} {decision.kind:<10} "
            f"{(decision.candidate or '-')[:12]:<12} {_summary(decision)}")


def _changes(body: dict[str, Any]) -> str:
    """What a ``suite_changed`` event changed, old -> new (fingerprints shortened)."""
    changed = body.get("changed") if body.get("event") == "suite_changed" else None
    if not isinstance(changed, dict):
        return ""

    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return text[1:13] if isinstance(value, str) and len(value) == 64 else text

    parts = [f"{key} {short(c.get('old'))} -> {short(c.get('new'))}"
             for key, c in changed.items() if isinstance(c, dict)]
    return "  " + "; ".join(parts)


@ledger.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--verdict", type=click.Choice(["accepted", "rejected", "inconclusive", "error"]))
@click.option("--version", "version", help="Only entries whose parent or candidate starts so.")
@json_option
@no_verify_option
def ledger_show(path: Path, verdict: str | None, version: str | None, as_json: bool,
                no_verify: bool) -> None:
    """List ledger entries as a table, after verifying the ledger (read-only)."""
    ledger = _open_file(path)
    _verified(ledger, str(path), no_verify)
    _note_resolved(ledger)
    entries = list(_filtered(ledger.entries(), verdict, version))
    rows = [_show_row(entry) for entry in entries]
    _emit([e.model_dump(mode="json") for e in entries], as_json, "\n".join(rows) or "no entries")


@ledger.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--blobs", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also check every blob of every accepted state in this folder.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A verifier (public) key file: check the ledger's signed checkpoint with it "
                   "instead of the key recorded in the ledger; fail if there is none.")
def ledger_verify(path: Path, blobs: Path | None, key_file: Path | None) -> None:
    """Verify a SQLite ledger (read-only); exit 1 and name the first bad entry if it fails.

    Checks the hash chain, the Merkle tree against the entries and, when a
    key is given or recorded, the last signed checkpoint. A missing, empty
    or foreign file is not a ledger and fails too.
    """
    from .blobs import FileBlobStore
    from .ledger import Checkpoint, VerifierKey

    key = None
    if key_file is not None:
        try:
            key = VerifierKey.load(key_file)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
    ledger = _open_file(path, key)
    if len(ledger) == 0:
        _verified(ledger, str(path), no_verify=False)  # exits: an empty ledger proves nothing
    note = ledger.latest_checkpoint()
    if key is not None and note is None:
        _fail(f"FAILED: {path}: no signed checkpoint to check with the given key (the "
              "checkpoint was removed, or the ledger never signed)", EXIT_NOT_ACCEPTED)
    report = ledger.verify(FileBlobStore(blobs) if blobs else None)
    if not report.ok:
        _fail(f"FAILED: {report.problem}", EXIT_NOT_ACCEPTED)
    _, root = ledger.root()
    line = f"ok: {report.size} entries, serving {report.served}, tree root {root.hex()}"
    if note is not None and (key is not None or ledger.verifier_key is not None):
        checkpoint = Checkpoint.read(note, where=str(path))
        line += f"; signed checkpoint of {checkpoint.size} entries verified"
    click.echo(line)


@ledger.command("prove")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("entry", type=int)
def ledger_prove(path: Path, entry: int) -> None:
    """Print the inclusion proof of ENTRY in the ledger's Merkle tree as JSON (read-only).

    Hashes are lowercase hex; "checkpoint" is the last signed checkpoint
    note, or null if the ledger does not sign.
    """
    ledger = _open_file(path)
    try:
        proof = ledger.prove(entry)
    except IndexError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    data = json.loads(proof.model_dump_json())
    data["checkpoint"] = ledger.latest_checkpoint()
    click.echo(json.dumps(data, indent=2))


@ledger.command("export")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def ledger_export(path: Path, directory: Path) -> None:
    """Write a signed SQLite ledger to DIRECTORY as a transparency log of static files.

    Entries (canonical bytes), an inclusion proof per entry, the signed
    checkpoint and the verifier key, checkable without this library (see
    examples/scenarios/verify_transparency_log.py). The ledger is verified first.
    """
    from .ledger import SQLiteLedger, export_transparency_log

    try:
        out = export_transparency_log(SQLiteLedger(path), directory)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    except (ValueError, OSError) as exc:
        _fail(str(exc), EXIT_CONFIG)
    click.echo(f"exported {sum(1 for _ in (out / 'entries').iterdir())} entries to {out}")


@main.group("db")
def db_group() -> None:
    """Manage a PostgreSQL ledger (the store several replicas share).

    URL defaults to [ledger] path of the configuration file. status and
    verify only read: they take no lock and write nothing.
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


def _db_timeout(url: str | None, config_path: Path) -> float:
    """[ledger] timeout when the URL comes from the configuration, else the default."""
    if url is None:
        config, _ = _config(config_path)
        return config.ledger.timeout or 10.0
    return 10.0


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
        ledger = PostgresLedger(dsn, schema=schema, migrate=False, read_only=True,
                                timeout=_db_timeout(url, config_path))
    except LedgerIntegrityError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    except ConfigError as exc:
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
@click.option("--blobs", type=click.Path(exists=True, file_okay=False, path_type=Path),
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
        ledger = PostgresLedger(dsn, schema=schema, migrate=False, verifier_key=key,
                                read_only=True, timeout=_db_timeout(url, config_path))
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


@db_group.command("prove")
@url_argument
@schema_option
@config_option
@click.option("--entry", type=int, help="Prove that entry ENTRY is in the current tree.")
@click.option("--from", "old_size", type=int,
              help="Prove that the tree of OLD entries is a prefix of the tree of --to entries.")
@click.option("--to", "new_size", type=int,
              help="The larger tree size for --from (default: every entry).")
def db_prove(url: str | None, schema: str | None, config_path: Path, entry: int | None,
             old_size: int | None, new_size: int | None) -> None:
    """Print an inclusion (--entry) or consistency (--from, --to) proof of a PostgreSQL
    ledger as JSON, as 'ledger prove' does for a SQLite file (read-only).

    The ledger is verified first, from one snapshot. Hashes are lowercase
    hex; "checkpoint" is the last signed checkpoint note, or null. Exits 1
    for a ledger that does not verify or an entry or size out of range.
    """
    from .ledger import PostgresLedger

    if (entry is None) == (old_size is None):
        raise click.UsageError("give exactly one of --entry N or --from OLD")
    if new_size is not None and old_size is None:
        raise click.UsageError("--to needs --from")
    dsn, schema = _postgres_target(url, config_path, schema)
    try:
        ledger = PostgresLedger(dsn, schema=schema, migrate=False, read_only=True,
                                timeout=_db_timeout(url, config_path))
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_NOT_ACCEPTED)
    try:
        report = ledger.verify()
        if not report.ok:
            _fail(f"FAILED: {report.problem}", EXIT_NOT_ACCEPTED)
        try:
            proof: Any = (ledger.prove(entry) if entry is not None
                          else ledger.prove_consistency(old_size or 0, new_size))
        except IndexError as exc:
            _fail(str(exc), EXIT_NOT_ACCEPTED)
        data = json.loads(proof.model_dump_json())
        data["checkpoint"] = ledger.latest_checkpoint()
    finally:
        ledger.close()
    click.echo(json.dumps(data, indent=2))


from ._blobs_cli import blobs_group  # noqa: E402  (its own module: issue 19)

main.add_command(blobs_group)

from ._rollout_cli import rollout_group  # noqa: E402  (its own module: issue 17)

main.add_command(rollout_group)


# -- guardrails report, transparency, serve: registered here, bodies in guardrails/report/ ------

ledger_path_option = click.option(
    "--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
    help="A SQLite ledger file to read instead of the configuration's.")
blobs_path_option = click.option(
    "--blobs", "blobs_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
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
    from .report import run_report

    run_report(config_path, ledger_path, blobs_path, out, with_inputs)


@main.command()
@config_option
@ledger_path_option
@json_option
def transparency(config_path: Path, ledger_path: Path | None, as_json: bool) -> None:
    """What users may be told about the served model: self-improving, frozen, drift, last change."""
    from .report import run_transparency

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
    from .report import serve_command

    serve_command(config_path, ledger_path, blobs_path, port)
