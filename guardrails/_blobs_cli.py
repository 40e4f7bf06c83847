"""``guardrails blobs``: the blob store checked against the ledger (verify, gc)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from ._errors import ConfigError, GuardrailsError, LedgerIntegrityError

EXIT_FAILED = 1
EXIT_CONFIG = 3


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _AbsentFolder:
    """A blob folder that does not exist, read as an empty store (opening it would create it)."""

    def __init__(self, url: str) -> None:
        self.name = f"{url} (no such folder)"

    def get(self, digest: str) -> bytes:
        raise KeyError(digest)


def _open(config_path: Path, *, writes_blobs: bool = False) -> tuple[Any, Any]:
    """(ledger, blob store) as the configuration names them; the ledger read-only (a missing
    ledger is exit 1, never created), a missing blob folder read as empty, not created, and
    the store read-only unless ``writes_blobs`` (gc deleting); exit 3 when the configuration
    is wrong."""
    from ._config import blob_url, load_config, open_blobs, open_ledger, refuse_two_blob_stores
    from .blobs import CachedBlobStore

    try:
        config, root = load_config(config_path)
        refuse_two_blob_stores(config, str(config_path))
        ledger = open_ledger(config.ledger, root, str(config_path), read_only=True)
    except LedgerIntegrityError as exc:
        _fail(str(exc), EXIT_FAILED)
    except GuardrailsError as exc:
        _fail(str(exc), EXIT_CONFIG)
    url, _ = blob_url(config, root)
    if url.startswith("file://") and not Path(url[len("file://"):]).is_dir():
        return ledger, _AbsentFolder(url)
    try:
        store = open_blobs(config, root, str(config_path), read_only=not writes_blobs)
    except GuardrailsError as exc:
        _close(ledger)
        _fail(str(exc), EXIT_CONFIG)
    # verify and gc answer for the shared store itself: a local cache may still hold a blob
    # the store has lost.
    return ledger, store.store if isinstance(store, CachedBlobStore) else store


def _close(*resources: Any) -> None:
    for resource in resources:
        close = getattr(resource, "close", None)
        if callable(close):
            close()


def ledger_states(ledger: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(states the ledger accepted or serves, every other state an entry names), each as
    version -> state, for the states the ledger holds. A missing accepted state is the
    ledger's problem (``guardrails ledger verify``), not the blob store's."""
    accepted: set[str] = set()
    named: set[str] = set()
    for entry in ledger.entries():
        decision = entry.decision
        if decision is None:
            continue
        named.update(v for v in (decision.parent, decision.candidate) if v)
        if decision.accepted and decision.candidate:
            accepted.add(decision.candidate)
    for version in (ledger.served_version(), ledger.anchor_version()):
        if version:
            accepted.add(version)

    def load(versions: set[str]) -> dict[str, Any]:
        return {v: ledger.get_state(v) for v in sorted(versions) if ledger.has_state(v)}

    return load(accepted), load(named - accepted)


config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=Path("guardrails.toml"), show_default=True, help="The configuration file.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group("blobs")
def blobs_group() -> None:
    """The blob store ([blobs] url) checked against the ledger."""


@blobs_group.command("verify")
@config_option
@json_option
def blobs_verify(config_path: Path, as_json: bool) -> None:
    """Every blob an accepted state references is present and matches its digest.

    Reads (streams) and hashes each blob; a blob of a rejected candidate may
    be absent but must be intact if present. Exit 1 naming each bad blob, the
    states referencing it and the store. Never writes.
    """
    from .blobs import verify_blobs

    ledger, store = _open(config_path)
    try:
        required, optional = ledger_states(ledger)
        audit = verify_blobs(store, required, optional)
    except (GuardrailsError, KeyError) as exc:
        _fail(f"the ledger could not be read ({exc})", EXIT_FAILED)
    finally:
        _close(ledger, store)
    name = getattr(store, "name", None) or getattr(store, "url", repr(store))
    if as_json:
        click.echo(json.dumps({"store": name, **audit.model_dump()}, indent=2))
    else:
        for problem in audit.problems:
            click.echo(f"{problem.problem}: {problem.message} (states "
                       f"{', '.join(v[:12] for v in problem.states)})")
        verdict = "ok" if audit.ok else "FAILED"
        click.echo(f"{verdict}: {audit.checked} blobs checked in {name}, "
                   f"{len(audit.problems)} problems")
    if not audit.ok:
        sys.exit(EXIT_FAILED)


@blobs_group.command("gc")
@config_option
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--grace", type=float, default=7 * 24.0, show_default=True,
              help="Hours: a younger blob is kept (it may belong to a proposal in flight).")
@json_option
def blobs_gc(config_path: Path, dry_run: bool, grace: float, as_json: bool) -> None:
    """Delete (or with --dry-run, list) blobs no ledger entry references, older than --grace.

    A blob of any state any entry names (accepted or not) or of the served
    and anchor versions is never a candidate.
    """
    from .blobs import unreferenced_blobs

    if grace < 0:
        _fail("--grace must be zero or more hours", 2)
    ledger, store = _open(config_path, writes_blobs=not dry_run)
    if isinstance(store, _AbsentFolder):
        _fail(f"the blob store {store.name} holds nothing to collect", EXIT_FAILED)
    if not hasattr(store, "blobs"):
        _fail(f"the blob store {store!r} cannot list its blobs", EXIT_CONFIG)
    if len(ledger) == 0:
        # Every blob would be unreferenced: a ledger path that is wrong must not empty the store.
        _fail("the ledger holds no entries, so every blob would look unreferenced; check "
              "[ledger] path (gc deletes nothing against an empty ledger)", EXIT_FAILED)
    try:
        required, optional = ledger_states(ledger)
        garbage = list(unreferenced_blobs(store, [*required.values(), *optional.values()],
                                          grace=grace * 3600, now=time.time()))
        if not dry_run:
            for info in garbage:
                store.delete(info.digest)
    except (GuardrailsError, ConfigError) as exc:
        _fail(str(exc), EXIT_FAILED)
    finally:
        _close(ledger, store)
    action = "would delete" if dry_run else "deleted"
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "blobs": [i.model_dump() for i in garbage]},
                              indent=2))
        return
    for info in garbage:
        click.echo(f"{action} {info.digest} ({info.size} bytes)")
    click.echo(f"{action} {len(garbage)} blobs, {sum(i.size for i in garbage)} bytes")
