"""``RolloutPolicy``: how a candidate is rolled out, validated once when it is built or loaded."""

from __future__ import annotations

import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

OnInconclusive = Literal["pause", "abort"]


class RolloutPolicy(BaseModel):
    """The ``[rollout]`` section: shadow, weighted steps, limits and what an inconclusive step does.

    A caller may rely on: ``steps`` strictly increase, every weight is in
    (0, 100] and the last one is 100 (a schedule that never reaches all traffic
    cannot report success); every limit is positive. ``ValidationError`` names
    the field otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shadow: bool = False
    """Start with a shadow phase: the candidate answers copies of live calls, the user gets the
    incumbent's answer. Only for clients declaring ``side_effect_free = True``."""
    shadow_fraction: float = Field(default=0.1, gt=0.0, le=1.0)
    """The share of live calls copied to the candidate in shadow."""
    shadow_concurrency: int = Field(default=2, gt=0)
    """At most this many shadow calls run at once; a call over the limit is not copied."""
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    """Per cent of traffic the candidate answers at each step; reaching 100 promotes it."""
    min_samples: int = Field(default=100, gt=0)
    """Candidate observations (pairs in shadow) each step needs before any verdict."""
    margin: float = Field(default=0.05, gt=0.0, lt=1.0)
    """How much worse than the incumbent (failure rate) still counts as non-inferior."""
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    """Error rate of the anytime-valid sequential tests, in either direction."""
    max_failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    """Abort when the candidate's failure rate in a step exceeds this (after ``min_samples``)."""
    max_consecutive_errors: int = Field(default=10, gt=0)
    """Abort after this many candidate errors in a row."""
    latency_limit: float = Field(default=10.0, gt=0.0)
    """Seconds: a call slower than this counts as failed (a timeout), on either side."""
    latency_margin: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Turn on the latency test (off by default): in a step, abort when the candidate is
    slower than the incumbent in more timed pairs than it is faster, by more than this share
    of the pairs (an anytime-valid sign test at ``alpha``; 0.2: slower in 60 % of pairs,
    faster in 40 %). A shift of the whole distribution shows up here even when no call
    reaches ``latency_limit``."""
    shadow_failures: Literal["limits", "pairs"] = "limits"
    """How a shadow pair counts when a side raised or took longer than ``latency_limit``:
    ``limits`` (default) leaves the pair out of the paired test and counts a candidate's
    error or timeout only against ``max_consecutive_errors`` and ``max_failure_rate`` (a
    shadow copy runs in the background beside the served call, so a slow or failed copy may
    be the host's doing, not the candidate's); ``pairs`` also scores it as a failure of that
    side in the paired test (a regression when the other side answered)."""
    step_deadline: float = Field(default=3600.0, gt=0.0)
    """Seconds a step may take; without a verdict by then, ``on_inconclusive`` applies."""
    on_inconclusive: OnInconclusive = "pause"
    """What a step without a verdict at its deadline does: ``pause`` (wait for an operator)
    or ``abort``. Never ``advance``: no data, too little data or NaN never passes."""
    on_gaming: Literal["record", "abort"] = "record"
    """When canary results are significantly better than live results: record the finding,
    or abort."""
    evaluate_every: int = Field(default=50, gt=0)
    """Every this many guarded calls, a replica flushes its evidence and evaluates the step."""
    safety_policies: tuple[str, ...] = ()
    """Runtime policies whose block of a candidate's answer aborts the rollout at once."""
    key: tuple[str, ...] = ("user_id", "session_id")
    """Request metadata keys, first present wins, that make assignment sticky; none: random."""

    @field_validator("steps")
    @classmethod
    def _schedule(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if not steps:
            raise ValueError("the schedule is empty; give steps such as [1, 5, 25, 50, 100]")
        bad = [w for w in steps if not 0.0 < w <= 100.0]
        if bad:
            raise ValueError(f"step weight {bad[0]!r} is outside (0, 100]; weights are per cent")
        for before, after in itertools.pairwise(steps):
            if after <= before:
                raise ValueError(f"step weights must strictly increase, but {after:g} follows "
                                 f"{before:g}")
        if steps[-1] != 100.0:
            raise ValueError(f"the schedule ends at {steps[-1]:g} %, so it never reaches all "
                             "traffic; make the last step 100")
        return steps

    @model_validator(mode="after")
    def _gathers_evidence(self) -> RolloutPolicy:
        if any(not k for k in self.key):
            raise ValueError("key names must be non-empty metadata keys, such as 'user_id'")
        if len(self.steps) == 1 and not self.shadow:
            raise ValueError("a schedule of only 100 % without shadow gathers no live evidence "
                             "before promotion; add smaller steps such as [5, 25, 100]")
        return self

    def weight(self, step: int) -> float:
        """The per cent of traffic step ``step`` sends to the candidate."""
        return self.steps[step]
