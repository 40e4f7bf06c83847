"""Numeric-tolerance and scorer checkers, and checker specs recorded for replay."""

from __future__ import annotations

import math

import pytest

import guardrails as gr
from guardrails.canary._suite import CheckerFailed, judge_output
from guardrails.testing import DictClient


@pytest.mark.parametrize(("output", "passes"), [
    (3.0, True), (3.05, True), (3.2, False), ("3", False), (True, False), (math.nan, False),
    (math.inf, False), (None, False)])
def test_numeric_tolerance(output: object, passes: bool) -> None:
    """Within abs_tol of the value passes; strings, booleans, NaN and infinity never do."""
    checker = gr.NumericTolerance(value=3.0, abs_tol=0.1)
    assert checker(output) is passes


def test_numeric_tolerance_from_a_case_file_dict() -> None:
    """{"numeric": {"value": 2, "rel_tol": 0.5}} builds a NumericTolerance."""
    case = gr.CanaryCase(id="n", input="x", expect={"numeric": {"value": 2, "rel_tol": 0.5}})
    assert isinstance(case.expect, gr.NumericTolerance) and case.expect(2.9)


@pytest.mark.parametrize(("score", "passes"), [
    (0.9, True), (0.5, True), (0.49, False), (1.5, False), (-0.1, False), ("0.9", False),
    (True, False)])
def test_scorer_passes_only_real_scores_at_or_above_the_threshold(score: object,
                                                                   passes: bool) -> None:
    """A score in [0, 1] at or above the threshold passes; any other value fails."""
    assert gr.Scorer(fn=lambda _o: score, threshold=0.5)("out") is passes


@pytest.mark.parametrize("score", [math.nan, None])
@pytest.mark.parametrize("kind", ["scorer", "predicate"])
def test_a_checker_returning_nothing_or_nan_is_broken_not_failing(score: object,
                                                                  kind: str) -> None:
    """A scorer or predicate returning None or NaN raises CheckerFailed: a broken evaluator,
    which judge_output reports as such (the gate never accepts on it)."""
    checker: gr.Checker = (gr.Scorer(fn=lambda _o: score) if kind == "scorer"
                           else gr.Predicate(fn=lambda _o: score))
    with pytest.raises(CheckerFailed, match="must return True or False"):
        checker("out")
    assert judge_output(checker, "out") == (False, f"checker {kind} raised CheckerFailed", True)


def test_decisions_record_the_checker_spec_of_every_public_case_that_ran() -> None:
    """The canary_run finding lists each public case's checker spec, hidden ones by name only."""
    cases = [gr.CanaryCase(id="a", input="a", expect={"regex": "^1$"}),
             gr.CanaryCase(id="h", input="h", expect="secret", hidden=True)]
    guarded = gr.Guard(gr.FrozenConstraints(), cases).wrap(
        DictClient({"answers": {"a": "1", "h": "secret"}, "v": 0}))
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/v", "value": 1}]))
    run = next(f for f in decision.findings if f.check == "canary_run")
    assert run.evidence["checkers"]["a"] == {"name": "regex", "args": {"pattern": "^1$"}}
    assert run.evidence["checkers"]["h"] == {"name": "equals", "hidden": True}
    assert run.evidence["suite_fingerprint"] == guarded.guard.canaries.fingerprint()
