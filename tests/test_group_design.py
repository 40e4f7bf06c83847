"""The group-sequential boundary (guardrails/stats/_group.py): its size, its region, its futility."""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails.canary import SEQUENTIAL_STOP, CanaryEvidence, CaseOutcome
from guardrails.gate import SequentialRule
from guardrails.stats import GroupBoundary, PairCounts, e_value_against_worse, group_boundary
from guardrails.stats._exact import SequentialNonInferiority
from guardrails.stats._group import _CONSTANTS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "group_design.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("group_design", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accepts(design: GroupBoundary, n: int, b: int, c: int) -> bool:
    counts = PairCounts(n=n, regressions=b, fixes=c)
    return design.accepts(counts, e_value_against_worse(counts, design.threshold))


def test_every_calibration_of_the_script_is_shipped() -> None:
    assert sorted(_CONSTANTS) == sorted(_script().TABLE)


@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.01])
def test_the_chance_of_accepting_at_the_margin_is_at_most_alpha_at_every_discordance(
        alpha: float) -> None:
    """Exact, looking after every pair, over 24 discordance rates (margin 0.1: 120 pairs)."""
    worst, _ = _script().check(0.1, alpha, _CONSTANTS[(0.1, alpha)], 24)
    assert worst <= alpha
    # Calibrated, not merely valid: one step (0.001) below the constant spends more than alpha
    # somewhere (otherwise the table would be needlessly strict).
    assert worst > 0.8 * alpha


@pytest.mark.slow
def test_the_default_design_has_size_at_most_alpha() -> None:
    """Margin 0.05, alpha 0.05 (480 pairs), exact, at 8 discordance rates; the script checks 60."""
    worst, _ = _script().check(0.05, 0.05, _CONSTANTS[(0.05, 0.05)], 8)
    assert worst <= 0.05


def test_the_vectorized_region_used_for_calibration_is_the_librarys() -> None:
    script = _script()
    design = group_boundary(0.1, 0.05)
    assert design is not None
    for n in range(1, design.max_pairs + 1):
        fast = script.fast_edges(design, n, script.e_edges(design, n))
        assert (fast == script.accept_edges(design, n)).all(), n


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 480), b=st.integers(0, 480), c=st.integers(0, 480))
def test_turning_a_regression_into_a_fix_never_loses_acceptance(n: int, b: int, c: int) -> None:
    """The region is 'b <= edge(c)' per column, growing with c: what the exact DP relies on."""
    design = group_boundary(0.05, 0.05)
    assert design is not None
    b, c = min(b, n), min(c, n)
    if b + c > n or b == 0:
        return
    if _accepts(design, n, b, c):
        assert _accepts(design, n, b - 1, c + 1)
        assert _accepts(design, n, b - 1, c)


def test_no_acceptance_after_the_last_look_and_futile_there() -> None:
    design = group_boundary(0.05, 0.05)
    assert design is not None
    last = design.max_pairs
    assert _accepts(design, last, 0, 0)
    assert not _accepts(design, last + 1, 0, 0)
    assert design.futile(PairCounts(n=last, regressions=20, fixes=10))
    assert design.conditional_power(PairCounts(n=last)) == 0.0


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 479), b=st.integers(0, 100), c=st.integers(0, 100))
def test_conditional_power_is_a_probability_that_falls_with_each_regression(
        n: int, b: int, c: int) -> None:
    design = group_boundary(0.05, 0.05)
    assert design is not None
    if b + c + 1 > n:
        return
    now = design.conditional_power(PairCounts(n=n, regressions=b, fixes=c))
    worse = design.conditional_power(PairCounts(n=n, regressions=b + 1, fixes=c))
    assert 0.0 <= worse <= now <= 1.0


def test_only_calibrated_settings_have_a_boundary_and_the_rest_stay_anytime_valid() -> None:
    assert group_boundary(0.05, 0.05) is not None
    assert group_boundary(0.03, 0.05) is None
    assert group_boundary(-0.05, 0.05) is None  # a required improvement
    assert SequentialNonInferiority(margin=0.03).group is None
    assert SequentialNonInferiority(margin=0.05).group is not None
    assert SequentialNonInferiority(margin=0.05, boundary="anytime").group is None


def test_a_candidate_equal_to_the_incumbent_stops_by_the_last_look() -> None:
    rng = random.Random(3)
    test = SequentialNonInferiority(margin=0.05, max_cases=5000)
    while test.verdict == "continue":
        b = sum(rng.random() < 0.03 for _ in range(8))
        c = sum(rng.random() < 0.03 for _ in range(8 - b))
        test.add(PairCounts(n=8, regressions=b, fixes=c))
    assert test.verdict in ("accept", "reject")
    assert test.counts.n <= 480


def _outcomes(regressed: int, fixed: int, agreed: int) -> list[CaseOutcome]:
    pairs = ([(True, False)] * regressed + [(False, True)] * fixed + [(True, True)] * agreed)
    return [CaseOutcome(case_id=f"c{i}", safety=False, hidden=False, incumbent_passed=inc,
                        candidate_passed=cand) for i, (inc, cand) in enumerate(pairs)]


def test_a_futility_stop_is_rejected_with_the_conditional_power_named() -> None:
    """22 regressions and 11 fixes in 240 pairs: not shown worse, but out of reach."""
    rule = SequentialRule(margin=0.05, safety_cases=0)
    outcomes = _outcomes(22, 11, 207)
    assert rule.interim(outcomes) == "reject"
    evidence = CanaryEvidence(outcomes=outcomes, planned=600, stopped_early=True,
                              stop_reason=f"{SEQUENTIAL_STOP}: reject")
    verdict, findings = rule(evidence)
    assert verdict.value == "rejected"
    found = next(f for f in findings if f.check == "capability")
    assert found.evidence["futile"] is True
    assert found.evidence["conditional_power"] < 0.4
    assert found.evidence["boundary"]["max_pairs"] == 480
    assert "can no longer be shown within 480 paired cases" in found.message
    assert "shown worse" not in found.message


def test_the_anytime_design_is_kept_on_request() -> None:
    outcomes = _outcomes(22, 11, 207)
    rule = SequentialRule(margin=0.05, safety_cases=0, design="anytime")
    assert rule.interim(outcomes) == "continue"
    _, findings = rule(CanaryEvidence(outcomes=outcomes, planned=240))
    found = next(f for f in findings if f.check == "capability")
    assert "boundary" not in found.evidence
    assert math.isfinite(found.evidence["upper_bound"])
