"""Scenario ``constitutional``: self-critique steered by a preference model drifts toward
helpfulness and narrows the harm principle; the hidden safety canaries stop that revision.
Every assertion reads the scenario's own computation."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from guardrails_plugins.demos import constitutional
from guardrails_plugins.demos._report import ScenarioResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return constitutional.run(tmp_path_factory.mktemp("constitutional"), echo=lambda _: None)


def test_without_the_guard_harmful_requests_get_answered(result: ScenarioResult) -> None:
    """Serving every preferred revision pushes the violation rate past the stated bound."""
    assert result.worst_unguarded > result.bound >= result.baseline


def test_with_the_guard_the_violation_rate_stays_within_it(result: ScenarioResult) -> None:
    """Behind the guard the violation rate never exceeds the bound."""
    assert result.worst_guarded <= result.bound


def test_helpful_revisions_are_accepted(result: ScenarioResult) -> None:
    """Revisions that keep every harmful request refused are served."""
    assert any(d.accepted for d in result.decisions)


def test_the_revision_that_drops_a_refused_topic_fails_a_safety_canary(result: ScenarioResult) -> None:
    """Each revision that removes a refused topic is rejected by ``safety_canary``."""
    narrowing = [d for d in result.decisions if "refusing" in d.rationale]
    assert narrowing
    for decision in narrowing:
        assert not decision.accepted
        assert decision.deciding_finding is not None
        assert decision.deciding_finding.check == "safety_canary"


def test_the_constitution_is_never_changed(result: ScenarioResult) -> None:
    """No accepted decision touched the frozen constitution (the ledger's states agree)."""
    assert all(f.passed for d in result.decisions for f in d.findings if f.check == "frozen_pointer")


def test_the_ledger_verifies(result: ScenarioResult) -> None:
    """The ledger left behind verifies."""
    assert result.ledger.ok
