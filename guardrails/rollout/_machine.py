"""The rollout state machine: frozen states and one pure transition function.

States: ``shadow``, ``step`` (with its index), ``paused``, ``promoted``,
``aborted``. ``promoted`` and ``aborted`` are final: nothing leaves them, so
an abort can never be undone by a promotion that was pending, and a retry is
a new attempt with its own id (:func:`start`).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..stats import PairCounts
from ._policy import RolloutPolicy

Phase = Literal["shadow", "step", "paused", "promoted", "aborted"]
Action = Literal["advance", "pause", "resume", "abort"]
FINAL: frozenset[str] = frozenset({"promoted", "aborted"})


class InvalidTransition(ValueError):
    """An action that the current state does not allow (say, advancing an aborted rollout)."""


def _now() -> datetime:
    return datetime.now(UTC)


class RolloutState(BaseModel):
    """One attempt's state. Replaced whole by :func:`transition`, never mutated.

    ``seq`` counts transitions: replicas compare-and-swap on it, so exactly one
    of them records each transition (and so one promotion or abort per attempt).
    """

    model_config = ConfigDict(frozen=True)

    attempt: str
    """The attempt id; a retry after an abort gets a new one."""
    candidate: str
    incumbent: str
    salt: str
    """Salt of the sticky assignment hash, recorded in the ledger with the start."""
    phase: Phase
    step: int = -1
    """Index into the schedule while in ``step`` (or paused from one); -1 in shadow."""
    paused_from: Literal["shadow", "step"] | None = None
    seq: int = 0
    reason: str = ""
    """Why the last transition happened (the deciding evidence, in words)."""
    entered_at: datetime = Field(default_factory=_now)
    proposal_id: str | None = None
    canary: PairCounts | None = None
    """The gate's canary pairs for this candidate: the offline side of the gaming check."""

    @property
    def final(self) -> bool:
        return self.phase in FINAL

    @property
    def active_phase(self) -> Literal["shadow", "step"] | None:
        """The phase whose traffic rules apply: a paused rollout keeps its last split."""
        if self.phase in ("shadow", "step"):
            return self.phase
        return self.paused_from if self.phase == "paused" else None

    def weight(self, policy: RolloutPolicy) -> float:
        """Per cent of traffic the candidate answers now (0 in shadow, final or unknown)."""
        if self.active_phase == "step" and 0 <= self.step < len(policy.steps):
            return policy.steps[self.step]
        return 100.0 if self.phase == "promoted" else 0.0

    def label(self) -> str:
        """``shadow``, ``step 2 (25 %)``-style text for status lines (without the policy)."""
        return f"step {self.step}" if self.phase == "step" else self.phase

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def start(candidate: str, incumbent: str, policy: RolloutPolicy, *,
          proposal_id: str | None = None, canary: PairCounts | None = None,
          shadow: bool | None = None) -> RolloutState:
    """A new attempt with a fresh id and salt: shadow if configured (and ``shadow`` does not
    say otherwise), else the first step."""
    shadow = policy.shadow if shadow is None else shadow
    phase: Phase = "shadow" if shadow else "step"
    return RolloutState(attempt=uuid.uuid4().hex, candidate=candidate, incumbent=incumbent,
                        salt=secrets.token_hex(16), phase=phase,
                        step=-1 if shadow else 0, reason="accepted by the gate",
                        proposal_id=proposal_id, canary=canary)


def transition(state: RolloutState, action: Action, policy: RolloutPolicy,
               reason: str = "") -> RolloutState:
    """The state after ``action``; raises ``InvalidTransition`` when it is not allowed.

    ``advance`` moves shadow to the first step, a step to the next, and the
    last step before 100 % to ``promoted``; ``pause``/``resume`` keep the
    split; ``abort`` is allowed from every non-final state.
    """
    if state.final:
        raise InvalidTransition(f"attempt {state.attempt[:12]} is already {state.phase}; "
                                "start a new attempt to roll the candidate out again")
    changes: dict[str, Any]
    if action == "abort":
        changes = {"phase": "aborted"}
    elif action == "pause":
        if state.phase == "paused":
            raise InvalidTransition("the rollout is already paused")
        changes = {"phase": "paused", "paused_from": state.phase}
    elif action == "resume":
        if state.phase != "paused":
            raise InvalidTransition(f"only a paused rollout resumes; this one is {state.phase}")
        changes = {"phase": state.paused_from, "paused_from": None}
    elif action == "advance":
        changes = _advance(state, policy)
    else:
        raise InvalidTransition(f"unknown action {action!r}; use advance, pause, resume or abort")
    return state.model_copy(update={**changes, "seq": state.seq + 1, "reason": reason,
                                    "entered_at": _now()})


def _advance(state: RolloutState, policy: RolloutPolicy) -> dict[str, Any]:
    current = state.active_phase
    if state.phase == "paused":
        raise InvalidTransition("a paused rollout advances only after resume")
    following = 0 if current == "shadow" else state.step + 1
    if following >= len(policy.steps) - 1:
        return {"phase": "promoted", "step": len(policy.steps) - 1}  # the last step is 100 %
    return {"phase": "step", "step": following}


def choose(actions: list[Action]) -> Action | None:
    """Of the actions asked at one decision point, the one that is taken: abort wins over
    everything (a pending promotion included), then pause, then advance."""
    for action in ("abort", "pause", "resume", "advance"):
        if action in actions:
            return action
    return None
