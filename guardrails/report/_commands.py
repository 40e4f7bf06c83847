"""The bodies of ``guardrails report``, ``guardrails transparency`` and ``guardrails serve``.

``_cli`` only registers these commands; everything they do is here. Exit
codes as ``guardrails --help`` documents: 1 when the ledger does not verify
(the report is still written, marked unverified), 3 for a configuration or
source problem, never a traceback for anything a user can cause.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from .._config import Config, load_config
from .._errors import GuardrailsError, LedgerIntegrityError
from ..blobs import BlobStore, FileBlobStore
from ..ledger import Ledger, SQLiteLedger, VerifierKey, is_postgres_url
from ._view import ReportData

EXIT_NOT_VERIFIED = 1
EXIT_CONFIG = 3
DEMO_LEDGER = Path(".guardrails/demo-ledger.db")
DEMO_BLOBS = Path(".guardrails/demo-blobs")
_CONTENT_OFF = (None, "false", "NO_CONTENT")


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@dataclass
class Source:
    """Where a report reads from: the ledger, its blobs and (if any) the configuration."""

    ledger: Ledger
    name: str
    blobs: BlobStore | None
    config: Config | None
    config_path: Path | None


class UnreadableLedger(Exception):
    """The ledger refused to open (damaged, rewritten before its signed checkpoint, foreign)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(problem)
        self.name, self.problem = name, problem


def _open_sqlite(path: Path, verifier: VerifierKey | None = None, *,
                 read_only: bool) -> Ledger:
    if not path.is_file():
        fail(f"{path}: no ledger there (nothing is created by a report); run the application "
             "or 'guardrails demo' first, or point --ledger at an existing file", EXIT_CONFIG)
    try:
        return SQLiteLedger(path, verifier_key=verifier, read_only=read_only)
    except LedgerIntegrityError as exc:
        raise UnreadableLedger(str(path), str(exc)) from None
    except GuardrailsError as exc:
        fail(str(exc), EXIT_CONFIG)


def _from_config(config_path: Path, read_only: bool) -> Source:
    from .._config import open_ledger

    try:
        config, root = load_config(config_path)
        if is_postgres_url(config.ledger.path):
            ledger: Ledger = open_ledger(config.ledger, root, str(config_path),
                                         read_only=read_only)
            name = "the PostgreSQL ledger of " + str(config_path)
        else:
            verifier = None if config.ledger.verifier_key is None else VerifierKey.load(
                root / config.ledger.verifier_key)
            ledger = _open_sqlite(root / config.ledger.path, verifier, read_only=read_only)
            name = str(root / config.ledger.path)
    except GuardrailsError as exc:
        fail(str(exc), EXIT_CONFIG)
    blobs_dir = root / config.ledger.blobs
    blobs = FileBlobStore(blobs_dir) if blobs_dir.is_dir() else None
    return Source(ledger, name, blobs, config, config_path)


def open_source(config_path: Path, ledger_path: Path | None, blobs_path: Path | None, *,
                read_only: bool = True) -> Source:
    """The ledger ``guardrails status`` reads; without a configuration here, the demo's.

    ``read_only`` (the default) opens it without creating or writing anything; the review
    page, which records approvals, opens it with ``read_only=False``."""
    if ledger_path is not None:
        blobs = FileBlobStore(blobs_path) if blobs_path is not None else None
        return Source(_open_sqlite(ledger_path, read_only=read_only), str(ledger_path), blobs,
                      None, None)
    if config_path.is_file():
        source = _from_config(config_path, read_only)
        if blobs_path is not None:
            source.blobs = FileBlobStore(blobs_path)
        return source
    if DEMO_LEDGER.is_file():
        click.echo(f"no {config_path} here: reading the demo's ledger {DEMO_LEDGER}", err=True)
        blobs = FileBlobStore(blobs_path or DEMO_BLOBS) if (blobs_path or DEMO_BLOBS).is_dir() \
            else None
        return Source(_open_sqlite(DEMO_LEDGER, read_only=read_only), str(DEMO_LEDGER), blobs,
                      None, None)
    fail(f"no {config_path} and no demo ledger ({DEMO_LEDGER}) here: pass -c CONFIG, "
         "--ledger PATH, or run 'guardrails demo' first", EXIT_CONFIG)


def _suite(source: Source) -> Any:
    from ..guard import Guard

    assert source.config_path is not None
    try:
        return Guard.from_config(source.config_path).canaries
    except GuardrailsError as exc:
        fail(str(exc), EXIT_CONFIG)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def case_texts(source: Source, with_inputs: bool) -> tuple[dict[str, str], list[str]]:
    """Public cases' inputs (only ``with_inputs``, and only when the configuration opts in to
    content capture) and the hidden cases' inputs, to withhold wherever they appear."""
    config = source.config
    if config is None or source.config_path is None:
        if with_inputs:
            fail("--public-inputs needs the configuration that names the canary files (-c)",
                 EXIT_CONFIG)
        return {}, []
    if with_inputs and config.guard.capture_content in _CONTENT_OFF:
        fail(f"{source.config_path}: case inputs are content; set [guard] capture_content = "
             "\"true\" to allow them in a report, or leave out --public-inputs", EXIT_CONFIG)
    suite = _suite(source)
    public = {c.id: json.dumps(c.input, ensure_ascii=False, default=str)
              for c in suite if not c.hidden} if with_inputs else {}
    # A hidden input as text and as the JSON a state would hold it in.
    hidden = [t for c in suite if c.hidden
              for t in {_text(c.input), json.dumps(c.input, ensure_ascii=False)[1:-1]} if t]
    return public, hidden


def read(source: Source, inputs: dict[str, str] | None = None,
         hidden: list[str] | None = None) -> tuple[ReportData, Any]:
    """The report's data and transparency statement for ``source``."""
    from ._transparency import transparency
    from ._view import read_report

    config = source.config
    data = read_report(source.ledger, source=source.name, blob_store=source.blobs,
                       drift_budget=None if config is None else config.constraints.drift_budget,
                       inputs=inputs, hidden=hidden or ())
    statement = transparency(
        data, frozen=None if config is None else [p if isinstance(p, str) else p.path
                                                  for p in config.constraints.frozen],
        mutable=None if config is None or config.constraints.mutable is None
        else [p if isinstance(p, str) else p.path for p in config.constraints.mutable])
    return data, statement


def run_report(config_path: Path, ledger_path: Path | None, blobs_path: Path | None,
               out: Path, with_inputs: bool) -> None:
    """Write the HTML report to ``out``; exit 1 (after writing it) if the ledger does not verify."""
    try:
        from ._render import render_report
    except ImportError as exc:
        fail(str(exc), EXIT_CONFIG)
    started = time.perf_counter()
    try:
        source = open_source(config_path, ledger_path, blobs_path)
    except UnreadableLedger as exc:
        data, statement = _unreadable(exc)
    else:
        inputs, hidden = case_texts(source, with_inputs)
        data, statement = read(source, inputs, hidden)
    try:
        html = render_report(data, statement)
    except ImportError as exc:
        fail(str(exc), EXIT_CONFIG)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        fail(f"{out}: cannot write the report ({exc.strerror})", EXIT_CONFIG)
    size = len(html.encode("utf-8"))
    click.echo(f"wrote {out} ({size / 1024:.0f} KB, {data.size} entries, "
               f"{len(data.details)} decisions in full) in {time.perf_counter() - started:.1f} s")
    if not data.verified:
        fail(f"the ledger does not verify ({data.problem}); the report says so and marks "
             "everything in it unverified", EXIT_NOT_VERIFIED)


def _unreadable(exc: UnreadableLedger) -> tuple[ReportData, Any]:
    """A report of a ledger that would not open: the problem, in red, and nothing else."""
    from datetime import UTC, datetime

    from ._transparency import transparency

    data = ReportData(source=exc.name, generated_at=datetime.now(UTC), verified=False,
                      problem=exc.problem, size=0, served=None, anchor=None, root=None, counts={},
                      timeline=(), details=(), older=0, points=(), drift=(), drift_budget=None,
                      events=(), pending=())
    return data, transparency(data)


def run_transparency(config_path: Path, ledger_path: Path | None, as_json: bool) -> None:
    """Print the transparency statement; exit 1 if the ledger does not verify."""
    try:
        _, statement = read(open_source(config_path, ledger_path, None))
    except UnreadableLedger as exc:
        _, statement = _unreadable(exc)
    if as_json:
        click.echo(json.dumps(statement.model_dump(mode="json"), indent=2))
    else:
        click.echo("\n".join(statement.sentences()))
    if not statement.verified:
        sys.exit(EXIT_NOT_VERIFIED)
