"""Staged-rollout transitions read from the ledger's ``rollout`` events, for the report.

Read, not trusted: a field of the wrong type is shown as absent, so a damaged or
hand-edited entry still renders (the verification banner says whether it may be).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

FINDINGS_SHOWN = 3
"""Failed findings listed per transition (an abort's reasons); the ledger keeps them all."""


class RolloutStep(BaseModel):
    """One rollout transition: what moved, to which phase and traffic share, and why."""

    model_config = ConfigDict(frozen=True)

    index: int
    action: str
    phase: str
    attempt: str | None = None
    """The attempt's id (a retry after an abort is a new attempt)."""
    step: int | None = None
    weight: float | None = None
    """Percent of live traffic the candidate serves after the transition."""
    candidate: str | None = None
    reason: str = ""
    failed: tuple[str, ...] = ()
    """Messages of the failed findings recorded with it (why an abort aborted), less the
    one the reason already says."""
    repaired: bool = False
    """Recorded by crash repair after the store had already moved."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _failed(findings: Any, reason: str) -> tuple[str, ...]:
    if not isinstance(findings, list):
        return ()
    messages = [_text(f.get("message")) for f in findings
                if isinstance(f, dict) and f.get("passed") is False]
    return tuple(m for m in messages if m and m != reason)[:FINDINGS_SHOWN]


def rollout_step(index: int, body: Mapping[str, Any]) -> RolloutStep:
    """The transition recorded in the event ``body`` of ledger entry ``index``."""
    reason = _text(body.get("reason"))
    return RolloutStep(
        index=index, action=_text(body.get("action")) or "?",
        phase=_text(body.get("phase")) or "?", attempt=_text(body.get("attempt")) or None,
        step=_int(body.get("step")), weight=_float(body.get("weight")),
        candidate=_text(body.get("candidate")) or None,
        reason=reason, failed=_failed(body.get("findings"), reason),
        repaired=body.get("repaired") is True)
