"""Per-step verdicts from live evidence, reusing the canary engine's anytime-valid tests.

A step's evidence is reduced to ``PairCounts`` (``stats``): in shadow, real
pairs (the candidate and the incumbent answered the same call); in a split,
the k-th candidate call paired with the k-th incumbent call, which are
independent, so the paired e-process is a valid two-sample test. Both are
checked at every evaluation; peeking is allowed by construction.

Nothing here passes by default: no data, too little data or a NaN waits, and
at the step's deadline pauses or aborts (``on_inconclusive``), never advances.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .._decision import Finding
from ..stats import (
    PairCounts,
    e_value_against_better,
    e_value_against_worse,
    sequential_lower_bound,
    sequential_upper_bound,
)
from ._machine import Action
from ._policy import RolloutPolicy


class StepEvidence(BaseModel):
    """What the store aggregated for one attempt and its current step (across replicas)."""

    model_config = ConfigDict(frozen=True)

    pairs: PairCounts = PairCounts()
    """All pairs of the attempt so far (pass = neither failed); the sequential tests use these."""
    step_samples: int = 0
    """Candidate observations (pairs in shadow) in the current step: ``min_samples`` applies."""
    step_failures: int = 0
    """Of those, how many failed (error, timeout, blocked by a policy, bad feedback, NaN)."""
    consecutive_errors: int = 0
    """The candidate's latest run of failed calls, across replicas in arrival order."""
    safety_violation: str | None = None
    """A frozen-constraint or safety-policy violation by the candidate, in words."""
    elapsed: float = 0.0
    """Seconds since the step began."""
    latency: PairCounts = PairCounts()
    """Latency pairs of the split (k-th candidate call with the k-th incumbent call, both
    timed): a "regression" is a pair where the candidate was slower, a "fix" one where it was
    faster. Shadow copies are not timed against the served call (they share its host)."""


class Judgement(BaseModel):
    """What the evidence asks for: an action (``None``: keep collecting) and why."""

    model_config = ConfigDict(frozen=True)

    action: Action | None
    findings: tuple[Finding, ...] = ()

    @property
    def reason(self) -> str:
        return "; ".join(f.message for f in self.findings if not f.passed) or (
            self.findings[-1].message if self.findings else "")


Check = Literal["rollout_safety", "rollout_errors", "rollout_failure_rate", "rollout_worse",
                "rollout_slower",
                "rollout_noninferior", "rollout_inconclusive", "gaming"]


def _finding(check: Check, passed: bool, message: str, **evidence: object) -> Finding:
    return Finding(check=check, passed=passed, message=message, evidence=dict(evidence))


def judge(evidence: StepEvidence, policy: RolloutPolicy, *,
          canary: PairCounts | None = None) -> Judgement:
    """The verdict for the current step; hard limits first, then the sequential tests."""
    hard = _hard_limits(evidence, policy)
    if hard is not None:
        return Judgement(action="abort", findings=(hard,))
    if evidence.step_samples < policy.min_samples:
        return _inconclusive(evidence, policy, f"{evidence.step_samples} of the "
                             f"{policy.min_samples} samples this step needs")
    rate = evidence.step_failures / evidence.step_samples
    if not math.isfinite(rate) or rate > policy.max_failure_rate:
        return Judgement(action="abort", findings=(_finding(
            "rollout_failure_rate", False, f"the candidate failed {rate:.1%} of calls this step "
            f"(limit {policy.max_failure_rate:.1%})", failures=evidence.step_failures,
            samples=evidence.step_samples),))
    findings: list[Finding] = []
    target = math.log(1.0 / policy.alpha)
    pairs = evidence.pairs
    worse = e_value_against_better(pairs, 0.0) if pairs.n else -math.inf
    if worse >= target:
        return Judgement(action="abort", findings=(_finding(
            "rollout_worse", False, f"the candidate fails more often than the incumbent on live "
            f"traffic (e-value {math.exp(min(worse, 700)):.3g} >= {1 / policy.alpha:g}; "
            f"{pairs.regressions} regressions, {pairs.fixes} fixes in {pairs.n} pairs)",
            **_counts(pairs)),))
    slow = _latency_regression(evidence.latency, policy, target)
    if slow is not None:
        return Judgement(action="abort", findings=(slow,))
    gaming = gaming_finding(canary, pairs, policy.alpha)
    if gaming is not None:
        if policy.on_gaming == "abort":
            return Judgement(action="abort", findings=(gaming,))
        findings.append(gaming)
    better = e_value_against_worse(pairs, policy.margin) if pairs.n else -math.inf
    if better >= target:
        findings.append(_finding(
            "rollout_noninferior", True, f"non-inferior within {policy.margin:g} on live traffic "
            f"({pairs.n} pairs, e-value {math.exp(min(better, 700)):.3g})", **_counts(pairs)))
        return Judgement(action="advance", findings=tuple(findings))
    waiting = _inconclusive(evidence, policy, f"{pairs.n} pairs do not yet decide "
                            f"non-inferiority within {policy.margin:g}")
    return waiting.model_copy(update={"findings": (*findings, *waiting.findings)})


def _latency_regression(latency: PairCounts, policy: RolloutPolicy,
                        target: float) -> Finding | None:
    """A sign test on the split's latency pairs, anytime-valid like the outcome test: abort
    when the candidate is slower than the incumbent in more pairs than faster, by more than
    ``latency_margin`` (of all timed pairs) with confidence ``1 - alpha``. Off when unset."""
    if policy.latency_margin is None or latency.n == 0:
        return None
    e = e_value_against_better(latency, policy.latency_margin)
    if e < target:
        return None
    return _finding(
        "rollout_slower", False, f"the candidate is slower than the incumbent on live traffic "
        f"(slower in {latency.regressions}, faster in {latency.fixes} of {latency.n} timed "
        f"pairs; e-value {math.exp(min(e, 700)):.3g} >= {1 / policy.alpha:g} against a "
        f"difference of at most {policy.latency_margin:g})", slower=latency.regressions,
        faster=latency.fixes, pairs=latency.n)


def _hard_limits(evidence: StepEvidence, policy: RolloutPolicy) -> Finding | None:
    if evidence.safety_violation is not None:
        return _finding("rollout_safety", False, f"the candidate violated a safety constraint "
                        f"on live traffic: {evidence.safety_violation}")
    if evidence.consecutive_errors >= policy.max_consecutive_errors:
        return _finding("rollout_errors", False, f"{evidence.consecutive_errors} candidate "
                        f"failures in a row (limit {policy.max_consecutive_errors})",
                        consecutive=evidence.consecutive_errors)
    return None


def _inconclusive(evidence: StepEvidence, policy: RolloutPolicy, why: str) -> Judgement:
    if evidence.elapsed < policy.step_deadline:
        return Judgement(action=None, findings=(_finding("rollout_inconclusive", True,
                                                         f"waiting: {why}"),))
    return Judgement(action=policy.on_inconclusive, findings=(_finding(
        "rollout_inconclusive", False, f"the step's deadline of {policy.step_deadline:g} s "
        f"passed without a verdict ({why}); inconclusive is never a pass, so the rollout "
        f"{'pauses' if policy.on_inconclusive == 'pause' else 'aborts'}",
        samples=evidence.step_samples, **_counts(evidence.pairs)),))


def _counts(pairs: PairCounts) -> dict[str, int]:
    return {"pairs": pairs.n, "regressions": pairs.regressions, "fixes": pairs.fixes}


def gaming_finding(canary: PairCounts | None, live: PairCounts, alpha: float) -> Finding | None:
    """A ``gaming`` finding when the candidate did significantly better on the canaries than
    live: the live drop's lower bound exceeds the canary drop's upper bound (both anytime-valid
    ``1 - alpha/2`` bounds, so the intervals are disjoint at level ``alpha``)."""
    if canary is None or canary.n == 0 or live.n == 0:
        return None
    canary_upper = sequential_upper_bound(canary, alpha / 2)
    live_lower = sequential_lower_bound(live, alpha / 2)
    if live_lower <= canary_upper:
        return None
    return _finding(
        "gaming", False, f"the candidate did significantly better on the canaries than on live "
        f"traffic (pass-rate drop at most {canary_upper:.3f} on canaries, at least "
        f"{live_lower:.3f} live): it may have learned the tests", canary_upper=canary_upper,
        live_lower=live_lower, **_counts(live))
