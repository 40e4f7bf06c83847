"""What every scenario shares: a fresh ledger and blob store, the round-by-round table, the
verified ledger at the end, and the ``guardrails demo NAME`` entry point.

Each scenario runs the same self-improving system twice on the same data: once behind a
guard, once without one (every proposal served), and measures one harm metric on both
after every round. ``ScenarioResult`` is what the tests read; the table is what a person
reads, and both come from the same numbers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

import guardrails as gr

Echo = Callable[[str], Any]


@dataclass(frozen=True)
class Row:
    """One round: what was proposed, what the gate said, and the harm on both sides."""

    round: int
    proposal: str
    """The proposer's own one-line account (never evidence)."""
    verdict: str
    """``decision.verdict`` as text, or ``-`` when nothing was proposed."""
    deciding: str
    """``check: message`` of ``decision.deciding_finding``; empty when accepted."""
    guarded: float
    """The harm metric of the system served behind the guard, after the round."""
    unguarded: float
    """The harm metric of the same system with every proposal served."""
    decision: gr.Decision | None = None


@dataclass(frozen=True)
class ScenarioResult:
    """A finished scenario: its rows, the harm metric's name and bound, the ledger report."""

    name: str
    harm: str
    """What the harm metric measures (higher is worse)."""
    bound: float
    """The harm the guarded system must stay within; the unguarded one exceeds it."""
    baseline: float
    """The harm before the first round (both sides start from the same system)."""
    rows: tuple[Row, ...]
    ledger: gr.LedgerReport
    extra: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific measurements (documented by each scenario)."""

    @property
    def decisions(self) -> list[gr.Decision]:
        return [r.decision for r in self.rows if r.decision is not None]

    @property
    def worst_guarded(self) -> float:
        return max([self.baseline, *(r.guarded for r in self.rows)])

    @property
    def worst_unguarded(self) -> float:
        return max([self.baseline, *(r.unguarded for r in self.rows)])

    def verdicts(self) -> list[str]:
        return [r.verdict for r in self.rows]

    def deciding_checks(self) -> list[str]:
        """The ``check`` of each non-accepted decision's deciding finding, in order."""
        return [d.deciding_finding.check for d in self.decisions
                if not d.accepted and d.deciding_finding is not None]


def fresh_store(workdir: str | Path, name: str, signing_key: gr.SigningKey | None = None
                ) -> tuple[gr.SQLiteLedger, gr.FileBlobStore, Path]:
    """A new SQLite ledger (signing checkpoints with ``signing_key`` when given) and file blob
    store for scenario ``name`` in ``workdir``; the ones a previous run left
    (``NAME-ledger.db``, ``NAME-blobs``, ``NAME-log``) are removed first."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ledger_path, blobs_path = workdir / f"{name}-ledger.db", workdir / f"{name}-blobs"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{ledger_path}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(blobs_path, ignore_errors=True)
    shutil.rmtree(workdir / f"{name}-log", ignore_errors=True)
    return (gr.SQLiteLedger(ledger_path, signing_key=signing_key), gr.FileBlobStore(blobs_path),
            ledger_path)


def deciding_text(decision: gr.Decision | None, width: int = 110) -> str:
    """``check: message`` of the finding that decided a non-accepted verdict, shortened."""
    if decision is None or decision.accepted or decision.deciding_finding is None:
        return ""
    finding = decision.deciding_finding
    text = f"{finding.check}: {finding.message}"
    return text if len(text) <= width else text[: width - 3] + "..."


def make_row(round_: int, proposal: str, decision: gr.Decision | None, guarded: float,
             unguarded: float) -> Row:
    verdict = "-" if decision is None else decision.verdict.value
    return Row(round_, proposal, verdict, deciding_text(decision), guarded, unguarded, decision)


class Table:
    """Prints the round-by-round table as rows arrive."""

    def __init__(self, harm: str, echo: Echo, proposal_width: int = 68) -> None:
        self.harm, self.echo, self.width = harm, echo, proposal_width

    def header(self, baseline: float) -> None:
        self.echo(f"harm = {self.harm} (higher is worse)")
        self.echo(f"{'round':>5}  {'proposal':<{self.width}} {'verdict':<12} "
                  f"{'harm guarded':>12} {'unguarded':>9}")
        self.echo(f"{0:>5}  {'(start)':<{self.width}} {'':<12} {baseline:>12.3f} {baseline:>9.3f}")

    def row(self, row: Row) -> None:
        proposal = row.proposal if len(row.proposal) <= self.width else (
            row.proposal[: self.width - 3] + "...")
        self.echo(f"{row.round:>5}  {proposal:<{self.width}} {row.verdict:<12} "
                  f"{row.guarded:>12.3f} {row.unguarded:>9.3f}")
        if row.deciding:
            self.echo(f"{'':>7}guard: {row.deciding}")


def finish(ledger: gr.Ledger, blobs: gr.BlobStore | None, ledger_path: Path, echo: Echo,
           close: bool = True) -> gr.LedgerReport:
    """Verify the ledger (hash chain, Merkle root, states and blobs), print the outcome."""
    report = ledger.verify(blobs)
    echo(f"ledger: {ledger_path} ({report.size} entries, verifies: {report.ok}); "
         f"inspect it with: guardrails ledger show {ledger_path}")
    if close and hasattr(ledger, "close"):
        ledger.close()
    return report


def summary(result: ScenarioResult, echo: Echo) -> None:
    """The last line of the table: worst harm on each side against the stated bound."""
    echo(f"{result.harm}: worst {result.worst_guarded:.3f} with the guard, "
         f"{result.worst_unguarded:.3f} without (bound {result.bound:.3f}; start "
         f"{result.baseline:.3f})")


def entry_point(run: Callable[..., ScenarioResult]) -> Callable[..., None]:
    """The ``guardrails.demos`` entry point for a scenario's ``run``: an application, so it
    quiets the library's logs, and it reports the wall time."""

    def main(workdir: str | Path = ".guardrails") -> None:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
        started = time.perf_counter()
        run(workdir)
        print(f"done in {time.perf_counter() - started:.1f} s")

    main.__doc__ = run.__doc__
    return main
