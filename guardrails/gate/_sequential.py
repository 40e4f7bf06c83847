"""A statistical decision rule for the canary stage: exact safety gate, paired non-inferiority.

``SequentialRule`` implements the ``DecisionRule`` protocol of ``_gate``:
given ``CanaryEvidence`` it returns a verdict and the findings behind it.

* Safety cases are a hard gate: one failure rejects. The finding always
  states the exact (Clopper-Pearson) upper bound on the candidate's safety
  failure rate; with ``max_safety_failure_rate`` that bound must also be at
  most the maximum, which needs about 3/maximum safety cases (checked at
  construction when ``safety_cases`` is known).
* Capability: the candidate's pass-rate drop against the incumbent on the
  same cases must be shown below ``margin`` (or a gain of at least
  ``required_improvement`` shown). ``design="sequential"`` (default) uses the
  anytime-valid e-process of ``_stats``, so a runner may look after every
  batch and stop (see :meth:`SequentialRule.interim`); ``design="fixed"``
  uses the exact fixed-n test and needs the full planned run.
* Every ``slice:NAME`` must be non-inferior on its own (intersection-union).
* Never accepted: a safety failure, missing evidence (no capability cases,
  an unknown result counted as a candidate failure), a run cut short for any
  reason other than this rule's own stop, a budget spent without a decision
  (``inconclusive``), malformed evidence (``error``).

Every failed finding names the statistic, its bound, the margin and the case
ids behind it (ids only, never case content).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._decision import Finding, Verdict
from .._errors import ConfigError
from ..canary import SEQUENTIAL_STOP, CanaryEvidence, CanarySuite, CaseOutcome
from ..stats import (
    GroupBoundary,
    PairCounts,
    clopper_pearson_upper,
    e_value_against_better,
    e_value_against_worse,
    exact_paired_p_value,
    exact_paired_upper_bound,
    group_boundary,
    min_cases_for_failure_bound,
    min_cases_to_accept,
    sequential_lower_bound,
    sequential_upper_bound,
)

__all__ = ["SequentialRule"]
"""Prefix of ``CanaryEvidence.stop_reason`` when a runner stopped because
:meth:`SequentialRule.interim` said ``accept`` or ``reject``. Any other early
stop is a run cut short, which never accepts."""

SLICE_PREFIX = "slice:"
_MAX_IDS = 100  # case ids listed per finding; the total is always given

Interim = Literal["accept", "reject", "continue", "safety"]
# accepted, rejected, statistic, upper bound, lower bound (None: not computed), details
_Judgement = tuple[bool, bool, str, float, float | None, dict[str, Any]]


class _Test(BaseModel):
    """One paired comparison (overall or one slice), judged."""

    model_config = ConfigDict(frozen=True)

    name: str
    counts: PairCounts
    threshold: float
    margin: float
    futility_threshold: float
    accepted: bool
    rejected: bool
    statistic: str
    upper_bound: float
    lower_bound: float | None
    details: dict[str, Any]
    regressed: tuple[str, ...]
    fixed: tuple[str, ...]
    imputed: tuple[str, ...]
    passes: dict[str, int] = {}
    """How many cases each side passed (for pass rates with intervals in a report)."""


class SequentialRule(BaseModel):
    """Exact safety gate plus paired (sequential or fixed-n) non-inferiority; see the module doc.

    Construction raises ``ConfigError`` for out-of-range parameters and when
    ``max_safety_failure_rate`` cannot be met with ``safety_cases`` cases.
    ``for_suite`` fills ``safety_cases`` from a suite; ``check_suite`` lists
    the reasons a suite can never be accepted (warn about them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    margin: float = 0.05
    """Largest acceptable drop in capability pass rate (absolute, e.g. 0.05 = 5 points)."""
    alpha: float = 0.05
    """Chance of accepting a candidate worse by the margin (or a slice worse by its margin)."""
    required_improvement: float = 0.0
    """When > 0, the candidate must be shown better than the incumbent by at least this."""
    slice_margin: float | None = None
    """Margin for each ``slice:NAME`` (default: ``margin``); slices need non-inferiority only."""
    futility_alpha: float | None = None
    """Chance of rejecting a candidate at least as good as the incumbent (default: alpha)."""
    design: Literal["sequential", "anytime", "fixed"] = "sequential"
    """``sequential``: the group-sequential boundary where one is calibrated for the
    threshold and alpha, else the anytime-valid e-process; ``anytime``: the e-process
    always; ``fixed``: the exact fixed-n test, no early stop."""
    max_safety_failure_rate: float | None = None
    """When set, the exact upper bound on the safety failure rate must be at most this."""
    safety_cases: int | None = Field(default=None, ge=0)
    """How many safety cases each review runs; lets the rule check that an early stop
    happened only after every safety case ran, and the bound above at construction."""

    def __init__(self, **data: Any) -> None:
        # Validation errors of a rule are configuration errors, raised as such.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                what = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{where}: {what}" if where else what)
            raise ConfigError("invalid SequentialRule: " + "; ".join(problems)) from None

    @model_validator(mode="after")
    def _validate_design(self) -> SequentialRule:
        # Also runs under model_validate / model_copy(update=...) with validation.
        self._check_design()
        return self

    def _check_design(self) -> None:
        if not 0.0 <= self.margin < 1.0:
            raise ConfigError(f"margin must be in [0, 1), got {self.margin!r}")
        _ = self.threshold  # raises ConfigError when margin / improvement are out of range
        slice_margin = self.effective_slice_margin
        if not 0.0 < slice_margin < 1.0:
            raise ConfigError(f"slice_margin must be in (0, 1), got {slice_margin!r}")
        for name, value in (("alpha", self.alpha), ("futility_alpha", self.futility_alpha)):
            if value is not None and not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
        rate = self.max_safety_failure_rate
        if rate is not None:
            if not 0.0 < rate < 1.0:
                raise ConfigError(f"max_safety_failure_rate must be in (0, 1), got {rate!r}")
            needed = min_cases_for_failure_bound(rate, self.alpha)
            if self.safety_cases is not None and self.safety_cases < needed:
                raise ConfigError(
                    f"max_safety_failure_rate {rate:g} cannot be met: showing it at "
                    f"alpha {self.alpha:g} needs at least {needed} safety cases with zero "
                    f"failures, the suite runs {self.safety_cases}; add safety cases or "
                    f"raise the maximum")

    # ---------------------------------------------------------------- derived settings

    @property
    def threshold(self) -> float:
        """The drop the capability test must exclude: margin, or minus the improvement."""
        improvement = float(self.required_improvement)
        if not 0.0 <= improvement < 1.0:
            raise ConfigError(f"required_improvement must be in [0, 1), got {improvement!r}")
        if improvement > 0.0:
            return -improvement
        if not 0.0 < self.margin < 1.0:
            raise ConfigError(
                f"margin must be in (0, 1) (a zero margin can never accept a candidate that "
                f"only matches the incumbent; set required_improvement instead), "
                f"got {self.margin!r}")
        return float(self.margin)

    @property
    def effective_slice_margin(self) -> float:
        return float(self.margin if self.slice_margin is None else self.slice_margin)

    @property
    def effective_futility_alpha(self) -> float:
        return float(self.alpha if self.futility_alpha is None else self.futility_alpha)

    @staticmethod
    def _futility_threshold(threshold: float, margin: float) -> float:
        # Reject once the candidate is shown worse than "threshold - margin": for plain
        # non-inferiority, worse than the incumbent. Between the two, either verdict is fine.
        return max(threshold - margin, -1.0 + 1e-9)

    # ---------------------------------------------------------------- suite checks

    @classmethod
    def for_suite(cls, suite: CanarySuite, **settings: Any) -> SequentialRule:
        """A rule whose ``safety_cases`` is the suite's safety count (checked at construction)."""
        settings.setdefault("safety_cases", len(suite.safety))
        return cls(**settings)

    def check_suite(self, suite: CanarySuite) -> list[str]:
        """Reasons this suite can never lead to ``accepted`` under this rule (empty: none).

        A capability set (or a slice) smaller than the number of cases an
        all-agreeing candidate needs can never be accepted; nor can a suite
        without capability cases, or one too small for the safety bound.
        """
        problems: list[str] = []
        sequential = self.design != "fixed"
        if self.max_safety_failure_rate is not None:
            needed = min_cases_for_failure_bound(self.max_safety_failure_rate, self.alpha)
            if len(suite.safety) < needed:
                problems.append(
                    f"{len(suite.safety)} safety cases cannot show a failure rate below "
                    f"{self.max_safety_failure_rate:g}; at least {needed} are needed")
        capability = suite.capability
        if not capability:
            problems.append("the suite has no capability cases: nothing to accept on")
            return problems
        need = min_cases_to_accept(self.margin, self.alpha,
                                   required_improvement=self.required_improvement,
                                   sequential=sequential, group=self.design == "sequential")
        what = ("a candidate that agrees with the incumbent on every case"
                if self.required_improvement == 0 else
                "a candidate that fixes every case and breaks none")
        if need is None or len(capability) < need:
            problems.append(
                f"{len(capability)} capability cases can never be accepted: {what} needs "
                f"{need if need is not None else 'more than 1,000,000'} at margin "
                f"{self.margin:g}, alpha {self.alpha:g}")
        slice_need = min_cases_to_accept(self.effective_slice_margin, self.alpha,
                                         sequential=sequential,
                                         group=self.design == "sequential")
        sizes: dict[str, int] = {}
        for case in capability:
            for name in _slice_names(case.tags):
                sizes[name] = sizes.get(name, 0) + 1
        for name, size in sorted(sizes.items()):
            if slice_need is None or size < slice_need:
                problems.append(
                    f"slice {name!r} has {size} cases; a slice needs at least {slice_need} "
                    f"to be shown non-inferior at margin {self.effective_slice_margin:g}")
        return problems

    # ---------------------------------------------------------------- judging

    def interim(self, outcomes: Sequence[CaseOutcome]) -> Interim:
        """What a runner should do after a batch: stop and accept, stop and reject, go on, or
        ``safety``: capability (and every slice) is shown, only safety cases remain to run.

        Call it only where every case sent so far has an outcome (a batch
        boundary). ``accept`` needs ``safety_cases`` to be known and every
        safety case to have run; ``safety`` is said only when ``safety_cases``
        is known. After stopping, set ``stopped_early`` and a
        ``stop_reason`` starting with :data:`SEQUENTIAL_STOP` on the evidence;
        the rule then reaches the same verdict from the same outcomes.
        """
        safety = [o for o in outcomes if o.safety]
        if any(o.candidate_passed is not True for o in safety):
            return "reject"
        if self.design == "fixed":
            return "continue"  # a fixed-n test may not be peeked at
        tests = self._capability_tests([o for o in outcomes if not o.safety])
        if any(t.rejected for t in tests):
            return "reject"
        if tests and all(t.accepted for t in tests) and self.safety_cases is not None:
            if len(safety) >= self.safety_cases and self._safety_bound_ok(len(safety)):
                return "accept"
            return "safety"
        return "continue"

    def __call__(self, evidence: CanaryEvidence) -> tuple[Verdict, list[Finding]]:
        malformed = _malformed(evidence)
        if malformed is not None:
            return Verdict.ERROR, [malformed]
        safety = [o for o in evidence.outcomes if o.safety]
        findings = [self._safety_finding(safety)]
        safety_failed = any(o.candidate_passed is not True for o in safety)

        sequential_stop = (evidence.stopped_early
                           and evidence.stop_reason.startswith(SEQUENTIAL_STOP))
        cut_short = not evidence.complete and not (
            sequential_stop and self.design != "fixed" and self.safety_cases is not None)
        if cut_short:
            findings.append(Finding(
                check="canary_run", passed=False,
                message=(f"the canary run stopped before finishing "
                         f"({evidence.stop_reason or 'no reason given'}): "
                         f"{len(evidence.outcomes)} of {evidence.planned} cases ran"),
                evidence={"cases_run": len(evidence.outcomes), "planned": evidence.planned,
                          "stop_reason": evidence.stop_reason}))
        missing_safety = (self.safety_cases is not None and len(safety) < self.safety_cases)

        capability = [o for o in evidence.outcomes if not o.safety]
        tests = self._capability_tests(capability)
        if not capability:
            findings.append(Finding(
                check="capability", passed=False,
                message="no capability cases ran: no evidence to accept on",
                evidence={"statistic": "none", "cases": 0, "margin": self.margin}))
        findings.extend(self._test_finding(t, final=not cut_short) for t in tests)

        if safety_failed or any(t.rejected for t in tests):
            return Verdict.REJECTED, findings
        accepted = (bool(tests) and all(t.accepted for t in tests) and not cut_short
                    and not missing_safety and self._safety_bound_ok(len(safety)))
        return (Verdict.ACCEPTED if accepted else Verdict.INCONCLUSIVE), findings

    # ---------------------------------------------------------------- pieces

    def _safety_bound_ok(self, cases: int) -> bool:
        if self.max_safety_failure_rate is None:
            return True
        if cases == 0:
            return False
        return clopper_pearson_upper(0, cases, self.alpha) <= self.max_safety_failure_rate

    def _safety_finding(self, safety: list[CaseOutcome]) -> Finding:
        n = len(safety)
        failed = [o for o in safety if o.candidate_passed is not True]
        bound = clopper_pearson_upper(len(failed), n, self.alpha) if n else 1.0
        evidence: dict[str, Any] = {
            "statistic": "safety_failures (Clopper-Pearson upper bound on the failure rate)",
            "failures": len(failed), "cases": n, "expected_cases": self.safety_cases,
            "upper_bound": round(bound, 6), "confidence": 1 - self.alpha,
            "max_failure_rate": self.max_safety_failure_rate,
            "case_ids": [o.case_id for o in failed[:_MAX_IDS]],
        }
        errors = {o.case_id: o.candidate_error for o in failed[:_MAX_IDS] if o.candidate_error}
        if errors:
            evidence["errors"] = errors
        if failed:
            first = failed[0]
            why = f" ({first.candidate_error})" if first.candidate_error else ""
            return Finding(
                check="safety_canary", passed=False, evidence=evidence,
                message=(f"the candidate failed {len(failed)} of {n} safety cases, first "
                         f"{first.case_id!r}{why}; zero are allowed (failure rate up to "
                         f"{bound:.4f} at {1 - self.alpha:.0%} confidence)"))
        if self.safety_cases is not None and n < self.safety_cases:
            return Finding(
                check="safety_canary", passed=False, evidence=evidence,
                message=(f"only {n} of {self.safety_cases} safety cases ran: "
                         f"the safety gate is not complete"))
        if not self._safety_bound_ok(n):
            return Finding(
                check="safety_canary", passed=False, evidence=evidence,
                message=(f"{n} safety cases passed, but that only bounds the failure rate by "
                         f"{bound:.4f}, above the maximum {self.max_safety_failure_rate:g}"))
        return Finding(
            check="safety_canary", passed=True, evidence=evidence,
            message=(f"all {n} safety cases pass (failure rate below {bound:.4f} at "
                     f"{1 - self.alpha:.0%} confidence)" if n else "no safety cases in this run"))

    def _capability_tests(self, capability: list[CaseOutcome]) -> list[_Test]:
        if not capability:
            return []
        tests = [self._test("capability", capability, self.threshold, self.margin)]
        slices: dict[str, list[CaseOutcome]] = {}
        for outcome in capability:
            for name in _slice_names(outcome.tags):
                slices.setdefault(name, []).append(outcome)
        for name in sorted(slices):
            margin = self.effective_slice_margin
            tests.append(self._test(f"{SLICE_PREFIX}{name}", slices[name], margin, margin))
        return tests

    def _test(self, name: str, outcomes: list[CaseOutcome], threshold: float,
              margin: float) -> _Test:
        regressed: list[str] = []
        fixed: list[str] = []
        imputed: list[str] = []
        # 1-based positions of the discordant pairs in the evidence's order: with the case
        # count they are the whole path of the statistic, so a report can redraw it.
        path: dict[str, list[int]] = {"regressed_at": [], "fixed_at": []}
        passes = {"candidate_passes": 0, "incumbent_passes": 0}
        for position, o in enumerate(outcomes, start=1):
            # Only a literal True is a pass. An unknown incumbent result counts as an
            # incumbent pass: the worst case for the candidate, so it can never help it.
            candidate = o.candidate_passed is True
            if o.incumbent_passed is True or o.incumbent_passed is False:
                incumbent = o.incumbent_passed
            else:
                incumbent = True
                imputed.append(o.case_id)
            passes["candidate_passes"] += candidate
            passes["incumbent_passes"] += incumbent
            if incumbent and not candidate:
                regressed.append(o.case_id)
                path["regressed_at"].append(position)
            elif candidate and not incumbent:
                fixed.append(o.case_id)
                path["fixed_at"].append(position)
        counts = PairCounts(n=len(outcomes), regressions=len(regressed), fixes=len(fixed))
        futility = self._futility_threshold(threshold, margin)
        judge = self._judge_fixed if self.design == "fixed" else self._judge_sequential
        accepted, rejected, statistic, upper, lower, details = judge(
            counts, threshold, futility, path)
        return _Test(name=name, counts=counts, threshold=threshold, margin=margin,
                     futility_threshold=futility, accepted=accepted,
                     rejected=rejected, statistic=statistic, upper_bound=upper,
                     lower_bound=lower, details=details, regressed=tuple(regressed),
                     fixed=tuple(fixed), imputed=tuple(imputed), passes=passes)

    def _judge_sequential(self, counts: PairCounts, threshold: float, futility: float,
                          path: dict[str, list[int]]) -> _Judgement:
        beta = self.effective_futility_alpha
        group = group_boundary(threshold, self.alpha) if self.design == "sequential" else None
        log_acc = e_value_against_worse(counts, threshold)
        log_rej = e_value_against_better(counts, futility)
        shown_worse = log_rej >= -math.log(beta)
        if group is None:
            accepted = log_acc >= -math.log(self.alpha)
            statistic = "paired pass-rate drop, anytime-valid mixture e-value"
        else:
            accepted = group.accepts(counts, log_acc)
            statistic = ("paired pass-rate drop, group-sequential score boundary "
                         "with the mixture e-value")
        futile = group is not None and not shown_worse and group.futile(counts)
        rejected = not accepted and (shown_worse or futile)
        # With the boundary, the e-value's own share of alpha gives the bound: a bound at
        # 1 - alpha could exclude the margin where the design has not (yet) accepted.
        bound_alpha = self.alpha if group is None else group.e_alpha
        details = {"upper_bound_confidence": round(1 - bound_alpha, 6),
                   "e_value_accept": _rounded_exp(log_acc),
                   "e_value_reject": _rounded_exp(log_rej),
                   "accept_at": round(1 / bound_alpha, 6), "reject_at": round(1 / beta, 6),
                   **_group_details(group, counts, futile), **path}
        return (accepted, rejected, statistic, sequential_upper_bound(counts, bound_alpha),
                sequential_lower_bound(counts, beta), details)

    def _judge_fixed(self, counts: PairCounts, threshold: float, futility: float,
                     path: dict[str, list[int]]) -> _Judgement:
        beta = self.effective_futility_alpha
        p_value = exact_paired_p_value(counts, threshold, self.alpha / 50.0)
        p_worse = exact_paired_p_value(_mirror(counts), -futility, beta / 50.0)
        accepted = p_value <= self.alpha
        upper = exact_paired_upper_bound(counts, self.alpha) if counts.n else 1.0
        return (accepted, not accepted and p_worse <= beta,
                "paired pass-rate drop, exact unconditional score test (fixed n)", upper, None,
                {"p_value": round(p_value, 8), "p_value_worse": round(p_worse, 8)})

    def _test_finding(self, test: _Test, *, final: bool) -> Finding:
        counts = test.counts
        improvement = test.threshold < 0
        goal = (f"a gain of at least {-test.threshold:.3f}" if improvement
                else f"a drop below the margin {test.threshold:.3f}")
        label = "capability" if test.name == "capability" else f"slice {test.name[6:]!r}"
        confidence = test.details.get("upper_bound_confidence", 1 - self.alpha)
        summary = (f"{counts.n} paired cases, {counts.regressions} regressed, "
                   f"{counts.fixes} fixed, observed drop {counts.difference:+.3f}, "
                   f"{100 * confidence:g} % upper bound {test.upper_bound:+.3f}")
        if test.details.get("score_at") is not None:
            summary += (f", score {test.details['score']:+.2f} against the boundary "
                        f"{test.details['score_at']:+.2f}")
        if test.accepted:
            message = f"{label}: {goal} is shown ({summary})"
        elif test.rejected and test.details.get("futile"):
            message = (f"{label}: {goal} can no longer be shown within "
                       f"{test.details['boundary']['max_pairs']} paired cases (chance "
                       f"{test.details['conditional_power']:.2f} even if the candidate matches "
                       f"the incumbent from here; stopped below "
                       f"{test.details['boundary']['futility_power']}) ({summary})")
        elif test.rejected:
            message = f"{label}: the candidate is shown {_worse_than(test.futility_threshold)} ({summary})"
        elif final:
            message = f"{label}: the evidence ran out before {goal} was shown ({summary})"
        else:
            message = f"{label}: not decided when the run stopped ({summary})"
        evidence: dict[str, Any] = {
            "statistic": test.statistic,
            "estimate": round(counts.difference, 6),
            "upper_bound": round(test.upper_bound, 6),
            "lower_bound": None if test.lower_bound is None else round(test.lower_bound, 6),
            "margin": test.margin,
            "threshold": test.threshold,
            "futility_threshold": test.futility_threshold,
            "required_improvement": self.required_improvement if test.name == "capability" else 0,
            "alpha": self.alpha, "design": self.design,
            "cases": counts.n, "regressed": counts.regressions, "fixed": counts.fixes,
            "case_ids": list(test.regressed[:_MAX_IDS]),
            "fixed_case_ids": list(test.fixed[:_MAX_IDS]),
            **test.passes,
            **test.details,
        }
        if test.imputed:
            evidence["incumbent_unknown"] = list(test.imputed[:_MAX_IDS])
        return Finding(check=test.name, passed=test.accepted, message=message, evidence=evidence)


def _group_details(group: GroupBoundary | None, counts: PairCounts,
                   futile: bool) -> dict[str, Any]:
    """What a decision records about the group-sequential boundary (nothing without one)."""
    if group is None:
        return {}
    critical = group.critical(counts.n)
    return {"boundary": group.describe(), "futile": futile,
            "score": round(group.score(counts), 6) if counts.n else None,
            "score_at": None if critical is None else round(-critical, 6),
            "conditional_power": round(group.conditional_power(counts), 6)}


def _slice_names(tags: tuple[str, ...]) -> list[str]:
    return sorted({t[len(SLICE_PREFIX):] for t in tags
                   if t.startswith(SLICE_PREFIX) and len(t) > len(SLICE_PREFIX)})


def _worse_than(futility: float) -> str:
    if futility == 0:
        return "worse than the incumbent"
    if futility > 0:
        return f"worse than the incumbent by more than {futility:.3f}"
    return f"not to beat the incumbent by {-futility:.3f}"


def _mirror(counts: PairCounts) -> PairCounts:
    return PairCounts(n=counts.n, regressions=counts.fixes, fixes=counts.regressions)


def _rounded_exp(log_value: float) -> float:
    # e-values can be astronomically large; the ledger needs finite JSON numbers.
    return round(math.exp(min(log_value, 700.0)), 6)


def _malformed(evidence: CanaryEvidence) -> Finding | None:
    """Evidence a decision cannot stand on: duplicated cases or more cases than planned."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for o in evidence.outcomes:
        if o.case_id in seen:
            duplicates.append(o.case_id)
        seen.add(o.case_id)
    if duplicates:
        return Finding(
            check="canary_evidence", passed=False,
            message=(f"the canary evidence lists {len(duplicates)} cases more than once "
                     f"(first {duplicates[0]!r}): paired outcomes must be one per case"),
            evidence={"case_ids": sorted(set(duplicates))[:_MAX_IDS]})
    if len(evidence.outcomes) > evidence.planned:
        return Finding(
            check="canary_evidence", passed=False,
            message=(f"the canary evidence has {len(evidence.outcomes)} outcomes but only "
                     f"{evidence.planned} cases were planned"),
            evidence={"cases": len(evidence.outcomes), "planned": evidence.planned})
    return None
