"""``update_rate_limit``: at most N accepted updates per window, and a cool-down after rejections.

Reads the ledger's decisions (``ReviewContext.decisions()``), so the limits
hold across restarts and processes sharing a ledger. Counted: every
recorded decision except the genesis entry, operator rollbacks, and
proposals this check itself refused (so waiting out a cool-down does not
prolong it). A *rejection* is a ``rejected`` or ``inconclusive`` decision;
an ``error`` is the gate's own failure and does not count against the model.

- ``max_accepted`` per ``window_seconds``: a proposal is refused while that
  many updates were accepted within the window before now.
- ``max_rejections`` then ``cooldown_seconds``: after that many rejections
  in a row (since the last acceptance), proposals are refused until
  ``cooldown_seconds`` after the last of them. Each further rejection after
  the cool-down starts a new one, until an update is accepted.

Times are the decisions' wall-clock ``decided_at`` (UTC); ``clock`` is
injectable for tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from pydantic import Field, model_validator

import guardrails as gr

Clock = Callable[[], datetime]
_NOT_COUNTED_KINDS = frozenset({"genesis", "rollback"})
_REJECTIONS = frozenset({gr.Verdict.REJECTED, gr.Verdict.INCONCLUSIVE})


class UpdateRateLimitSettings(gr.PluginSettings):
    """Settings of the ``update_rate_limit`` plugin (give a rate, a cool-down, or both)."""

    max_accepted: int | None = Field(default=None, ge=1)
    """Accepted updates allowed per ``window_seconds``."""
    window_seconds: float = Field(default=3600.0, gt=0)
    max_rejections: int | None = Field(default=None, ge=1)
    """Rejections in a row that start a cool-down."""
    cooldown_seconds: float = Field(default=3600.0, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> UpdateRateLimitSettings:
        if self.max_accepted is None and self.max_rejections is None:
            raise ValueError("set max_accepted, max_rejections or both")
        return self


def _now() -> datetime:
    return datetime.now(UTC)


class UpdateRateLimit:
    """The ``update_rate_limit`` update check."""

    name = "update_rate_limit"

    def __init__(self, settings: UpdateRateLimitSettings, clock: Clock = _now) -> None:
        self.settings = settings
        self._clock = clock

    def __repr__(self) -> str:
        return f"UpdateRateLimit({self.settings!r})"

    def _counted(self, decision: gr.Decision) -> bool:
        if decision.kind in _NOT_COUNTED_KINDS:
            return False
        return not any(f.check == self.name and not f.passed for f in decision.findings)

    def __call__(self, context: gr.ReviewContext) -> Iterable[gr.Finding]:
        now = self._clock()
        decisions = [d for d in context.decisions() if self._counted(d)]
        return [finding for finding in (self._rate(decisions, now), self._cooldown(decisions, now))
                if finding is not None]

    def _rate(self, decisions: list[gr.Decision], now: datetime) -> gr.Finding | None:
        limit = self.settings.max_accepted
        if limit is None:
            return None
        window = timedelta(seconds=self.settings.window_seconds)
        recent = sorted(d.decided_at for d in decisions if d.accepted and d.decided_at > now - window)
        evidence = {"statistic": "accepted_in_window", "value": len(recent), "limit": limit,
                    "window_seconds": self.settings.window_seconds}
        if len(recent) < limit:
            return gr.Finding(check=self.name, passed=True,
                              message=f"{len(recent)} of {limit} accepted updates used in the "
                                      f"last {self.settings.window_seconds:g} s",
                              evidence=evidence)
        retry = (recent[-limit] + window - now).total_seconds()
        return gr.Finding(check=self.name, passed=False,
                          message=f"{len(recent)} updates were accepted in the last "
                                  f"{self.settings.window_seconds:g} s (limit {limit}); propose "
                                  f"again in {retry:.0f} s",
                          evidence={**evidence, "retry_after": round(retry, 3)})

    def _cooldown(self, decisions: list[gr.Decision], now: datetime) -> gr.Finding | None:
        limit = self.settings.max_rejections
        if limit is None:
            return None
        streak: list[gr.Decision] = []
        for decision in reversed(decisions):
            if decision.accepted:
                break
            if decision.verdict in _REJECTIONS:
                streak.append(decision)
        evidence = {"statistic": "rejections_in_a_row", "value": len(streak), "limit": limit,
                    "cooldown_seconds": self.settings.cooldown_seconds}
        if len(streak) >= limit:
            until = streak[0].decided_at + timedelta(seconds=self.settings.cooldown_seconds)
            if now < until:
                retry = (until - now).total_seconds()
                return gr.Finding(check=self.name, passed=False,
                                  message=f"cooling down after {len(streak)} rejections in a row "
                                          f"(limit {limit}); propose again in {retry:.0f} s",
                                  evidence={**evidence, "retry_after": round(retry, 3)})
        return gr.Finding(check=self.name, passed=True,
                          message=f"{len(streak)} rejections in a row, no cool-down in force",
                          evidence=evidence)


def build(settings: UpdateRateLimitSettings) -> gr.PluginParts:
    return gr.PluginParts(checks=[UpdateRateLimit(settings)])


plugin = gr.Plugin(
    name="update_rate_limit", settings=UpdateRateLimitSettings, factory=build,
    provides={"checks"},
    description="At most N accepted updates per window, and a cool-down after N rejections in a "
                "row.")
