"""Scenario ``self_edit``: sequential self-edits make the model forget its original task;
the guard's retention canaries and weight drift budget keep it within the bound.

Every assertion reads the scenario's own computation (its rows and ledger); nothing
here restates a verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import guardrails as gr

pytest.importorskip("sklearn")

from guardrails_plugins.demos import self_edit
from guardrails_plugins.demos._report import ScenarioResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScenarioResult, Path]:
    workdir = tmp_path_factory.mktemp("self_edit")
    return self_edit.run(workdir, echo=lambda _: None), workdir


def test_without_the_guard_the_model_forgets(result: tuple[ScenarioResult, Path]) -> None:
    """Serving every kept self-edit pushes the original-task error past the stated bound."""
    res, _ = result
    assert res.worst_unguarded > res.bound > res.baseline


def test_with_the_guard_forgetting_stays_within_the_bound(result: tuple[ScenarioResult, Path]) -> None:
    """Behind the guard the original-task error never exceeds the bound."""
    res, _ = result
    assert res.worst_guarded <= res.bound


def test_forgetting_edits_are_rejected_by_retention_or_drift(result: tuple[ScenarioResult, Path]) -> None:
    """Some self-edits are accepted, and the rejected ones are decided by the retention
    canaries (``capability``) or the weight drift budget, both of which appear."""
    res, _ = result
    assert any(d.accepted for d in res.decisions)
    assert {"capability", "weight_drift"} <= set(res.deciding_checks())


def test_every_accepted_edit_is_within_the_drift_budget(result: tuple[ScenarioResult, Path]) -> None:
    """The drift budget's finding on every accepted decision is at most the budget."""
    res, _ = result
    for decision in res.decisions:
        if decision.accepted:
            drift = next(f for f in decision.findings if f.check == "weight_drift")
            assert drift.evidence["distance"] <= self_edit.DRIFT_BUDGET


def test_the_ledger_verifies(result: tuple[ScenarioResult, Path]) -> None:
    """The ledger left behind verifies, reopened from disk with its blobs."""
    res, workdir = result
    assert res.ledger.ok
    ledger = gr.SQLiteLedger(workdir / "self_edit-ledger.db")
    try:
        assert ledger.verify(gr.FileBlobStore(workdir / "self_edit-blobs")).ok
    finally:
        ledger.close()


def test_the_run_is_deterministic(tmp_path: Path, result: tuple[ScenarioResult, Path]) -> None:
    """A second run with the same seed prints the same verdicts and harm figures."""
    res, _ = result
    again = self_edit.run(tmp_path, echo=lambda _: None)
    assert [(r.verdict, r.guarded, r.unguarded) for r in again.rows] == \
           [(r.verdict, r.guarded, r.unguarded) for r in res.rows]
