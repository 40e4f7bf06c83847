"""Scenario ``reasoning``: a solver that tunes its strategy games its weak verifier, then
its monitor; the guard's hidden strong checks catch both. Every assertion reads the
scenario's own computation."""

from __future__ import annotations

import pytest
from guardrails_plugins.demos import reasoning
from guardrails_plugins.demos._report import ScenarioResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return reasoning.run(tmp_path_factory.mktemp("reasoning"), echo=lambda _: None)


def test_without_the_guard_the_solver_hacks_its_verifier(result: ScenarioResult) -> None:
    """Serving every tuned strategy pushes the wrong-answer rate past the stated bound."""
    assert result.worst_unguarded > result.bound >= result.baseline


def test_with_the_guard_the_wrong_answer_rate_stays_within_it(result: ScenarioResult) -> None:
    """Behind the guard the wrong-answer rate never exceeds the bound."""
    assert result.worst_guarded <= result.bound


def test_a_real_strategy_improvement_is_accepted(result: ScenarioResult) -> None:
    """At least one tuning step (cheaper and still right) is served."""
    assert any(d.accepted for d in result.decisions)


def test_optimising_against_the_monitor_drops_its_recall(result: ScenarioResult) -> None:
    """The monitor flags the unguarded solver's hacked answers before it is in the reward,
    and misses them after."""
    recall = result.extra["monitor_recall"]
    before = [v for v in recall[: reasoning.MONITOR_FROM_ROUND - 1] if v is not None]
    after = [v for v in recall[reasoning.MONITOR_FROM_ROUND - 1:] if v is not None]
    assert before and after and min(before) > 0.5 > max(after)


def test_the_hidden_checks_still_catch_the_hack_the_monitor_misses(result: ScenarioResult) -> None:
    """Once the solver writes traces the monitor accepts, the trace-monitor safety cases pass
    and the hack is still not accepted: a finding from the hidden cases decides."""
    late = [r.decision for r in result.rows[reasoning.MONITOR_FROM_ROUND - 1:]
            if r.decision is not None and "complete" in r.decision.rationale]
    assert late
    for decision in late:
        assert not decision.accepted
        safety = next(f for f in decision.findings if f.check == "safety_canary")
        assert safety.passed
        assert decision.deciding_finding is not None
        assert decision.deciding_finding.check in {"capability", "gaming"}


def test_the_ledger_verifies(result: ScenarioResult) -> None:
    """The ledger left behind verifies."""
    assert result.ledger.ok
