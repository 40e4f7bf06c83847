"""SequentialRule: the statistical decision rule of the canary stage."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import CanaryCase, CanarySuite, Equals
from guardrails._decision import Verdict
from guardrails._errors import ConfigError
from guardrails.canary._evidence import SEQUENTIAL_STOP, CanaryEvidence, CaseOutcome
from guardrails.gate._rules import DecisionRule
from guardrails.gate._sequential import SequentialRule
from guardrails.stats import PairCounts, e_value_against_better, e_value_against_worse


def safety(n: int, *, failing: tuple[int, ...] = ()) -> list[CaseOutcome]:
    return [CaseOutcome(case_id=f"s{i}", safety=True, hidden=False, tags=("safety",),
                        candidate_passed=i not in failing, incumbent_passed=True,
                        candidate_error="timeout: no answer within 1 s" if i in failing else None)
            for i in range(n)]


def capability(agree: int, regress: int = 0, fix: int = 0, *, prefix: str = "c",
               tags: tuple[str, ...] = ()) -> list[CaseOutcome]:
    """``agree`` cases both pass, then ``regress`` the candidate breaks, ``fix`` it fixes."""
    out = []
    for i in range(agree + regress + fix):
        kind = "agree" if i < agree else "regress" if i < agree + regress else "fix"
        out.append(CaseOutcome(
            case_id=f"{prefix}{i}", safety=False, hidden=i % 3 == 0, tags=tags,
            candidate_passed=kind != "regress", incumbent_passed=kind != "fix"))
    return out


def evidence(*parts: list[CaseOutcome], planned: int | None = None, stop: str = "") -> CanaryEvidence:
    outcomes = tuple(o for part in parts for o in part)
    return CanaryEvidence(outcomes=outcomes,
                          planned=len(outcomes) if planned is None else planned,
                          stopped_early=bool(stop), stop_reason=stop)


def finding(findings: list, check: str):  # type: ignore[no-untyped-def, type-arg]
    return next(f for f in findings if f.check == check)


def test_is_a_decision_rule_with_a_stable_repr() -> None:
    rule: DecisionRule = SequentialRule(margin=0.05)
    assert repr(SequentialRule(margin=0.05)) == repr(rule)


def test_all_agreeing_candidate_is_accepted_once_there_are_enough_cases() -> None:
    assert SequentialRule(margin=0.05, design="anytime")(
        evidence(safety(20), capability(71)))[0] is Verdict.ACCEPTED
    rule = SequentialRule(margin=0.05)  # group-sequential: 100 cases
    verdict, findings = rule(evidence(safety(20), capability(100)))
    assert verdict is Verdict.ACCEPTED
    assert all(f.passed for f in findings)
    verdict, findings = rule(evidence(safety(20), capability(99)))
    assert verdict is Verdict.INCONCLUSIVE
    cap = finding(findings, "capability")
    assert not cap.passed and "ran out" in cap.message
    for key in ("statistic", "upper_bound", "margin", "case_ids", "cases"):
        assert key in cap.evidence
    assert cap.evidence["margin"] == 0.05 and cap.evidence["upper_bound"] > 0.05


def test_a_safety_failure_rejects_and_names_case_bound_and_cause() -> None:
    rule = SequentialRule(margin=0.05)
    verdict, findings = rule(evidence(safety(30, failing=(4,)), capability(200)))
    assert verdict is Verdict.REJECTED
    gate = finding(findings, "safety_canary")
    assert not gate.passed and "'s4'" in gate.message and "timeout" in gate.message
    assert gate.evidence["case_ids"] == ["s4"]
    # The exact Clopper-Pearson bound for 1 failure in 30 (scipy.stats.beta.ppf(0.95, 2, 29)).
    assert gate.evidence["upper_bound"] == pytest.approx(0.149, abs=1e-3)


def test_clean_safety_reports_the_rule_of_three_bound() -> None:
    _, findings = SequentialRule(margin=0.05)(evidence(safety(300), capability(100)))
    gate = finding(findings, "safety_canary")
    assert gate.passed
    assert gate.evidence["upper_bound"] == pytest.approx(1 - 0.05 ** (1 / 300), rel=1e-4)


def test_max_safety_failure_rate_is_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match="at least 299 safety cases"):
        SequentialRule(max_safety_failure_rate=0.01, safety_cases=100)
    rule = SequentialRule(max_safety_failure_rate=0.01, safety_cases=299)
    assert rule(evidence(safety(299), capability(100)))[0] is Verdict.ACCEPTED
    # Without a known suite size the bound still gates at review time.
    loose = SequentialRule(max_safety_failure_rate=0.01)
    verdict, findings = loose(evidence(safety(50), capability(100)))
    assert verdict is Verdict.INCONCLUSIVE
    assert "above the maximum" in finding(findings, "safety_canary").message


def test_for_suite_and_check_suite() -> None:
    cases = [CanaryCase(id=f"s{i}", input=f"bad {i}", expect=Equals(value="no"), tags=("safety",))
             for i in range(10)]
    cases += [CanaryCase(id=f"c{i}", input=f"q {i}", expect=Equals(value="a"),
                         tags=("slice:fr",) if i < 5 else ()) for i in range(40)]
    suite = CanarySuite(cases)
    with pytest.raises(ConfigError):
        SequentialRule.for_suite(suite, max_safety_failure_rate=0.05)
    rule = SequentialRule.for_suite(suite, margin=0.05)
    assert rule.safety_cases == 10
    problems = rule.check_suite(suite)
    assert any("40 capability cases can never be accepted" in p and "100" in p for p in problems)
    assert any("slice 'fr' has 5 cases" in p for p in problems)
    assert SequentialRule(margin=0.2).check_suite(
        CanarySuite([c for c in cases if "slice:fr" not in c.tags])) == []


def test_clearly_worse_candidate_is_rejected_with_the_regressed_ids() -> None:
    verdict, findings = SequentialRule(margin=0.05)(evidence(safety(5), capability(60, 40, 2)))
    assert verdict is Verdict.REJECTED
    cap = finding(findings, "capability")
    assert not cap.passed and "worse than the incumbent" in cap.message
    assert cap.evidence["regressed"] == 40 and cap.evidence["case_ids"][0] == "c60"
    assert cap.evidence["lower_bound"] > 0 and cap.evidence["estimate"] == pytest.approx(38 / 102)


def test_every_slice_must_be_non_inferior() -> None:
    good = capability(300, prefix="g", tags=("slice:en",))
    bad = capability(60, 30, prefix="b", tags=("slice:fr",))
    verdict, findings = SequentialRule(margin=0.2)(evidence(good, bad))
    # Overall the drop is 30/390 < 0.2 and is shown; the French slice is not.
    assert finding(findings, "capability").passed
    assert finding(findings, "slice:en").passed
    fr = finding(findings, "slice:fr")
    assert not fr.passed and fr.evidence["case_ids"][:2] == ["b60", "b61"]
    assert verdict is not Verdict.ACCEPTED
    assert SequentialRule(margin=0.2)(evidence(good))[0] is Verdict.ACCEPTED


def test_no_evidence_never_accepts() -> None:
    rule = SequentialRule(margin=0.05)
    assert rule(CanaryEvidence())[0] is Verdict.INCONCLUSIVE
    verdict, findings = rule(evidence(safety(100)))
    assert verdict is Verdict.INCONCLUSIVE
    assert "no capability cases" in finding(findings, "capability").message


def test_a_run_cut_short_never_accepts() -> None:
    rule = SequentialRule(margin=0.05, safety_cases=10)
    parts = (safety(10), capability(200))
    verdict, findings = rule(evidence(*parts, planned=400, stop="client crashed"))
    assert verdict is Verdict.INCONCLUSIVE
    assert "client crashed" in finding(findings, "canary_run").message
    # The same outcomes after this rule's own early stop are accepted (anytime-valid)...
    assert rule(evidence(*parts, planned=400, stop=f"{SEQUENTIAL_STOP}: accept"))[0] \
        is Verdict.ACCEPTED
    # ...but not when the rule cannot check that every safety case ran,
    unknown = SequentialRule(margin=0.05)
    assert unknown(evidence(*parts, planned=400, stop=SEQUENTIAL_STOP))[0] \
        is Verdict.INCONCLUSIVE
    # nor when a safety case had not run yet,
    assert rule(evidence(safety(9), capability(200), planned=400, stop=SEQUENTIAL_STOP))[0] \
        is Verdict.INCONCLUSIVE
    # nor under the fixed-n design, which may not be stopped early.
    fixed = SequentialRule(margin=0.05, safety_cases=10, design="fixed")
    assert fixed(evidence(*parts, planned=400, stop=SEQUENTIAL_STOP))[0] is Verdict.INCONCLUSIVE
    assert fixed(evidence(*parts))[0] is Verdict.ACCEPTED


def test_unknown_results_never_count_as_passes() -> None:
    rule = SequentialRule(margin=0.05)
    # A NaN smuggled past validation is not a pass.
    nan_case = CaseOutcome.model_construct(
        case_id="s-nan", safety=True, hidden=False, tags=("safety",),
        candidate_passed=math.nan,  # type: ignore[arg-type]
        incumbent_passed=True, candidate_error=None,
        incumbent_error=None)
    assert rule(evidence([nan_case], capability(200)))[0] is Verdict.REJECTED
    # An unknown incumbent result is counted as an incumbent pass (worst case).
    missing = [CaseOutcome(case_id=f"m{i}", safety=False, hidden=False,
                           candidate_passed=False, incumbent_passed=None) for i in range(10)]
    verdict, findings = rule(evidence(capability(100), missing))
    cap = finding(findings, "capability")
    assert cap.evidence["regressed"] == 10 and cap.evidence["incumbent_unknown"][0] == "m0"
    assert verdict is not Verdict.ACCEPTED


def test_malformed_evidence_is_an_error() -> None:
    twice = capability(5) + capability(5)
    verdict, findings = SequentialRule()(evidence(twice))
    assert verdict is Verdict.ERROR and findings[0].check == "canary_evidence"
    verdict, _ = SequentialRule()(evidence(capability(5), planned=3))
    assert verdict is Verdict.ERROR


def test_required_improvement() -> None:
    rule = SequentialRule(margin=0.05, required_improvement=0.05)
    assert rule.threshold == -0.05
    # Only as good as the incumbent: shown not to gain margin + improvement, so rejected.
    verdict, findings = rule(evidence(capability(300, 5, 5)))
    assert verdict is Verdict.REJECTED
    assert "not to beat the incumbent by 0.100" in finding(findings, "capability").message
    verdict, findings = rule(evidence(capability(30, 1, 3)))
    assert verdict is Verdict.INCONCLUSIVE
    assert "gain of at least 0.050" in finding(findings, "capability").message
    assert rule(evidence(capability(200, 2, 60)))[0] is Verdict.ACCEPTED


def test_interim_tells_the_runner_when_to_stop() -> None:
    rule = SequentialRule(margin=0.05, safety_cases=10)
    assert rule.interim(safety(10) + capability(30)) == "continue"
    assert rule.interim(safety(10) + capability(100)) == "accept"
    assert rule.interim(safety(5) + capability(100)) == "safety"  # only safety cases remain
    assert rule.interim(safety(10, failing=(2,))) == "reject"
    assert rule.interim(safety(10) + capability(20, 20)) == "reject"
    assert SequentialRule(margin=0.05).interim(safety(10) + capability(100)) == "continue"
    assert SequentialRule(design="fixed", safety_cases=10).interim(
        safety(10) + capability(80)) == "continue"


def test_fixed_design_decides_at_the_planned_size() -> None:
    rule = SequentialRule(margin=0.05, design="fixed")
    assert rule(evidence(capability(59)))[0] is Verdict.ACCEPTED
    assert rule(evidence(capability(58)))[0] is Verdict.INCONCLUSIVE
    verdict, findings = rule(evidence(capability(100, 30)))
    assert verdict is Verdict.REJECTED
    assert "p_value" in finding(findings, "capability").evidence


@pytest.mark.parametrize("settings", [
    {"margin": 0.0}, {"margin": 1.5}, {"margin": -0.1, "required_improvement": 0.1},
    {"alpha": 0.0}, {"alpha": math.nan}, {"required_improvement": 1.0},
    {"slice_margin": 0.0}, {"max_safety_failure_rate": 0.0}, {"futility_alpha": 2.0},
    {"safety_cases": -1}, {"design": "bayesian"}, {"unknown": 1},
])
def test_bad_settings_are_config_errors(settings: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError):
        SequentialRule(**settings)


# -- issue 22: a decision is replayable from its recorded evidence ---------------------------------


_kinds = st.lists(st.sampled_from(["agree", "agree", "agree", "regress", "fix", "unknown"]),
                  min_size=1, max_size=160)


def _outcomes(kinds: list[str]) -> list[CaseOutcome]:
    return [CaseOutcome(case_id=f"c{i}", safety=False, hidden=False,
                        candidate_passed=kind in ("agree", "fix"),
                        incumbent_passed=None if kind == "unknown" else kind != "fix")
            for i, kind in enumerate(kinds)]


@settings(max_examples=60, deadline=None)
@given(kinds=_kinds, safety_cases=st.integers(0, 5))
def test_a_decision_is_replayed_from_its_recorded_evidence(kinds: list[str],
                                                           safety_cases: int) -> None:
    """The same verdict and findings from the evidence after a JSON round trip (what the
    ledger stores), and the recorded counts and positions of the discordant pairs give
    back the recorded e-values: anyone can recompute the decision."""
    rule = SequentialRule(margin=0.05, safety_cases=safety_cases)
    recorded = evidence(safety(safety_cases), _outcomes(kinds))
    verdict, findings = rule(recorded)
    replayed = CanaryEvidence.model_validate_json(recorded.model_dump_json())
    assert rule(replayed) == (verdict, findings)
    found = finding(findings, "capability").evidence
    assert len(found["regressed_at"]) == found["regressed"]
    assert len(found["fixed_at"]) == found["fixed"]
    counts = PairCounts(n=found["cases"], regressions=found["regressed"], fixes=found["fixed"])
    accept = math.exp(min(e_value_against_worse(counts, found["threshold"]), 700.0))
    reject = math.exp(min(e_value_against_better(counts, found["futility_threshold"]), 700.0))
    assert found["e_value_accept"] == round(accept, 6)
    assert found["e_value_reject"] == round(reject, 6)
    # The group-sequential boundary accepts on the e-value at its own level or on the score.
    on_score = found.get("score_at") is not None and found["score"] <= found["score_at"]
    assert (verdict is Verdict.ACCEPTED) == (found["e_value_accept"] >= found["accept_at"]
                                             or on_score)
