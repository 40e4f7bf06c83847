"""The ``guardrails`` command line."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

import click

from ._errors import GuardrailsError
from ._ledger import SQLiteLedger

DEMO_GROUP = "guardrails.demos"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="guardrails-middleware")
def main() -> None:
    """Runtime guardrails for self-updating models."""


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
                               f"{', '.join(sorted(demos)) or 'none'} (pip install "
                               "'guardrails-middleware[demo]')")
    try:
        run = demos[name].load()
    except ImportError as exc:
        raise click.ClickException(f"demo {name!r} needs packages that are missing ({exc}); "
                                   "install them with: pip install 'guardrails-middleware[demo]'"
                                   ) from None
    run(workdir=workdir)


@main.group()
def ledger() -> None:
    """Inspect and verify a ledger."""


@ledger.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def ledger_verify(path: Path) -> None:
    """Verify a SQLite ledger; exit 1 and name the first bad entry if it does not verify."""
    try:
        report = SQLiteLedger(path).verify()
    except GuardrailsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if not report.ok:
        click.echo(f"FAILED: {report.problem}", err=True)
        sys.exit(1)
    click.echo(f"ok: {report.size} entries, serving {report.served}")
