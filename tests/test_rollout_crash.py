"""A process killed between the rollout store's compare-and-swap and the ledger write: the
store is a move ahead, ``guardrails rollout status`` says so (exit 1), and ``status --repair``
or the next transition records the move (or rolls back a start never recorded), once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

import guardrails as gr
from guardrails._cli import main
from guardrails.rollout import _live, repair, store_for
from guardrails.testing import DictClient

ROOT = Path(__file__).resolve().parents[1]
STATE = {"answers": {"a": "1"}, "rev": 0}
CONFIG = """
[canaries]
files = ["cases.jsonl"]

[rollout]
steps = [5, 50, 100]
min_samples = 1000
"""
CHILD = textwrap.dedent("""
    import os, sys
    import guardrails as gr
    from guardrails.rollout import operate, store_for
    from guardrails.testing import DictClient

    config, action, where = sys.argv[1:4]
    guard = gr.Guard.from_config(config)
    ledger = guard.ledger
    original = getattr(ledger, where)

    def crash(*args, **kwargs):
        if where != "record_event" or args[0] == "rollout":
            os._exit(9)  # killed: no handler, no cleanup runs
        return original(*args, **kwargs)

    if action == "start":
        guarded = guard.wrap(DictClient({"answers": {"a": "1"}, "rev": 0}))
        setattr(ledger, where, crash)
        guarded.propose({"parent": guarded.version,
                         "patch": [{"op": "replace", "path": "/rev", "value": 1}]})
    else:
        store = store_for(ledger)
        setattr(ledger, where, crash)
        operate(store, ledger, guard.rollout, store.active(), action, "crash test")
    sys.exit(0)  # not reached: the crash comes first
""")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "1"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["rollout", *args], catch_exceptions=False)


def _start(project: Path) -> gr.Decision:
    guarded = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE))
    decision = guarded.propose({"parent": guarded.version,
                                "patch": [{"op": "replace", "path": "/rev", "value": 1}]})
    assert decision.accepted
    return decision


def _crash(project: Path, action: str, where: str = "record_event") -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(project / "guardrails.toml"),
                           action, where], env=env, capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr.decode()


def _story() -> list[tuple[str, str, int]]:
    data, _ = json.JSONDecoder().raw_decode(run("status", "--json").output)  # then any error
    return [(s["action"], s["phase"], s["seq"]) for s in data["ledger"]]


def _ledger(project: Path) -> gr.SQLiteLedger:
    return gr.SQLiteLedger(project / ".guardrails" / "ledger.db")


def test_a_crash_after_the_store_moved_is_reported_then_repaired_once(project: Path) -> None:
    """Killed between the pause's compare-and-swap and its ledger entry: status exits 1;
    status --repair records the pause (marked repaired) and exits 0; a second repair is a
    no-op."""
    _start(project)
    _crash(project, "pause")
    stale = run("status")
    assert stale.exit_code == 1 and "--repair" in stale.output
    repaired = run("status", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "recorded the pause" in repaired.output
    assert _story() == [("start", "step", 0), ("pause", "paused", 1)]
    size = len(_ledger(project))
    assert run("status", "--repair").exit_code == 0 and len(_ledger(project)) == size
    entry = next(e for e in _ledger(project).entries() if e.body.get("action") == "pause")
    assert entry.body["repaired"] is True and _ledger(project).verify().ok


def test_the_next_transition_records_the_missing_one_first(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed during an advance; the operator's abort afterwards (past the grace a live
    writer has to record its move) first records the advance, so the ledger tells every move
    in order."""
    _start(project)
    _crash(project, "advance")
    monkeypatch.setattr(_live, "REPAIR_GRACE", 0.0)
    assert run("abort", "--reason", "after the crash").exit_code == 0
    assert _story() == [("start", "step", 0), ("advance", "step", 1), ("abort", "aborted", 2)]
    assert run("status").exit_code == 0


def test_a_crash_inside_the_promotion_is_completed_by_the_repair(project: Path) -> None:
    """Killed before the ledger's promotion compare-and-swap ran: the store says promoted,
    the ledger still serves the incumbent; the repair promotes, once."""
    decision = _start(project)
    run("advance")
    _crash(project, "advance", where="promote")
    assert _ledger(project).served_version() == decision.parent
    assert run("status", "--repair").exit_code == 0
    assert _ledger(project).served_version() == decision.candidate
    assert _story()[-1] == ("advance", "promoted", 2)
    promotions = [e for e in _ledger(project).entries()
                  if e.decision is not None and e.decision.kind == "rollout"]
    assert len(promotions) == 1


def test_a_crash_after_the_promotion_records_only_the_transition(project: Path) -> None:
    """Killed after the ledger promoted but before the transition entry: the repair does not
    promote twice."""
    decision = _start(project)
    run("advance")
    _crash(project, "advance")
    assert run("status", "--repair").exit_code == 0
    assert _ledger(project).served_version() == decision.candidate
    assert len([e for e in _ledger(project).entries()
                if e.decision is not None and e.decision.kind == "rollout"]) == 1
    assert _story()[-1] == ("advance", "promoted", 2)


def test_a_start_never_recorded_is_rolled_back(project: Path) -> None:
    """Killed between the store's start and the ledger's: no ledger entry says the candidate
    may serve, so the repair aborts the attempt and records why; nothing was promoted."""
    incumbent = gr.Guard.from_config(project / "guardrails.toml").wrap(DictClient(STATE)).version
    _crash(project, "start")
    ledger = _ledger(project)
    store = store_for(ledger)
    assert store.active() is not None
    fixed = repair(store, ledger, gr.Guard.from_config(project / "guardrails.toml").rollout)  # type: ignore[arg-type]
    assert fixed.action == "abort" and fixed.state is not None
    assert fixed.state.phase == "aborted" and store.active() is None
    assert _story() == [("abort", "aborted", 1)]
    assert ledger.served_version() == incumbent and run("status").exit_code == 0


def test_a_move_being_recorded_right_now_is_waited_for_not_written_twice(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the grace, a lagging ledger is a writer still at work: the next transition
    does not write the move for it (it would come twice) nor skip it; it asks to try again
    (exit 1), and once the grace is over it records the move first."""
    _start(project)
    _crash(project, "pause")
    waiting = run("resume")
    assert waiting.exit_code == 1 and "try again" in waiting.output
    assert [a for a, _, _ in _story()] == ["start"]
    monkeypatch.setattr(_live, "REPAIR_GRACE", 0.0)
    assert run("resume").exit_code == 0
    assert [a for a, _, _ in _story()] == ["start", "pause", "resume"]


class _Racing:
    """A ledger whose next event write first lets another repairer, on a connection of its
    own (as another process would), repair the same gap to the end."""

    def __init__(self, ledger: gr.SQLiteLedger, other: Any) -> None:
        self._ledger, self._other, self.raced = ledger, other, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def __len__(self) -> int:
        return len(self._ledger)

    def _race(self) -> None:
        if not self.raced:
            self.raced = True
            self._other()

    def record_event(self, *args: Any, **kwargs: Any) -> Any:
        self._race()
        return self._ledger.record_event(*args, **kwargs)

    def record_event_at(self, *args: Any, **kwargs: Any) -> Any:
        self._race()
        return self._ledger.record_event_at(*args, **kwargs)


def test_two_repairers_of_the_same_gap_record_it_once(project: Path) -> None:
    """The other repairer writes the missing pause between this one's look and its write:
    this one's append is refused (the ledger grew), it looks again and finds nothing missing."""
    _start(project)
    _crash(project, "pause")
    policy = gr.Guard.from_config(project / "guardrails.toml").rollout
    ledger, other = _ledger(project), _ledger(project)
    racing = _Racing(ledger, lambda: repair(store_for(other), other, policy))  # type: ignore[arg-type]
    fixed = repair(store_for(ledger), racing, policy)  # type: ignore[arg-type]
    assert racing.raced and fixed.action is None and fixed.problem is None
    assert [a for a, _, _ in _story()] == ["start", "pause"]
    assert ledger.verify().ok
