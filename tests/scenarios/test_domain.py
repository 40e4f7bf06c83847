"""Scenario ``domain``: an optimiser for the high digits is held to its scope and to the
other slices; every assertion reads the scenario's own computation."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from guardrails_plugins.demos import domain
from guardrails_plugins.demos._report import ScenarioResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return domain.run(tmp_path_factory.mktemp("domain"), echo=lambda _: None)


def test_without_the_guard_the_worst_group_error_exceeds_the_bound(result: ScenarioResult) -> None:
    """Serving every domain step pushes the worst-group error past the stated bound."""
    assert result.worst_unguarded > result.bound > result.baseline


def test_with_the_guard_the_worst_group_error_stays_within_it(result: ScenarioResult) -> None:
    """Behind the guard the worst-group error never exceeds the bound."""
    assert result.worst_guarded <= result.bound


def test_an_update_of_shared_parameters_is_out_of_scope(result: ScenarioResult) -> None:
    """The step that also moves ``/shared/gamma`` is rejected by ``mutable_scope``, naming it."""
    scoped = [d.deciding_finding for d in result.decisions
              if d.deciding_finding is not None and d.deciding_finding.check == "mutable_scope"]
    assert scoped and all("/shared/gamma" in f.message for f in scoped)


def test_a_step_that_regresses_the_other_slice_is_named(result: ScenarioResult) -> None:
    """An in-scope step that costs the low digits is not accepted, decided by ``slice:low``."""
    assert "slice:low" in result.deciding_checks()


def test_an_in_scope_step_that_regresses_nothing_is_accepted(result: ScenarioResult) -> None:
    """At least one domain step passes every check and is served."""
    assert any(d.accepted for d in result.decisions)


def test_a_step_that_widens_the_gap_between_groups_is_rejected_naming_the_group(
        result: ScenarioResult) -> None:
    """The specialising step is decided by ``slice_parity``, which names the group behind,
    and its evidence shows the gap widened by more than the tolerance."""
    parity = [d.deciding_finding for d in result.decisions
              if d.deciding_finding is not None and d.deciding_finding.check == "slice_parity"]
    assert parity
    for finding in parity:
        before, after = finding.evidence["before"], finding.evidence["after"]
        widened = abs(after["right"] - after["left"]) - abs(before["right"] - before["left"])
        assert widened > domain.PARITY_TOLERANCE
        assert "falls behind" in finding.message


def test_every_decision_ran_the_parity_check(result: ScenarioResult) -> None:
    """Each decision that reached the static checks carries a ``slice_parity`` finding."""
    for decision in result.decisions:
        if decision.deciding_finding is None or decision.deciding_finding.check != "mutable_scope":
            assert any(f.check == "slice_parity" for f in decision.findings)


def test_the_ledger_verifies(result: ScenarioResult) -> None:
    """The ledger left behind verifies."""
    assert result.ledger.ok
