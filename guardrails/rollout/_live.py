"""One replica's view of the active rollout: the hot-path split, the evidence buffer, and the
transitions every replica may attempt (the store's compare-and-swap lets exactly one win).

``apply_action`` and ``evaluate`` need only the store and the ledger, so the
CLI drives a rollout without the model; ``LiveRollout`` adds what a serving
replica needs: the candidate client, the assignment and the buffered calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from .._decision import Decision, Finding
from .._telemetry import Telemetry
from ..ledger import Ledger
from ._assign import Assigner
from ._judge import Judgement, judge
from ._machine import Action, RolloutState, transition
from ._policy import RolloutPolicy
from ._repair import ROLLOUT_EVENT, lag, repair
from ._store import CallRow, RolloutStore

_log = structlog.get_logger(__name__)

METRIC_PHASE = "guardrails.rollout.phase"
METRIC_WEIGHT = "guardrails.rollout.weight"
METRIC_ABORTS = "guardrails.rollout.aborts"
ATTR_PHASE = "guardrails.rollout.phase"
ATTR_ATTEMPT = "guardrails.rollout.attempt"
ATTR_ABORT_REASON = "guardrails.rollout.abort_reason"
ATTR_ARM = "guardrails.rollout.arm"
"""Span attribute and response metadata: ``candidate`` or ``incumbent``, the arm that answered."""
SPAN_TRANSITION = "guardrails.rollout.transition"
PHASE_CODES = {"shadow": 0, "step": 1, "paused": 2, "promoted": 3, "aborted": 4}
"""``guardrails.rollout.phase`` as a number (the attribute carries the name)."""


class RolloutMetrics:
    """The rollout's instruments on the guard's meter; telemetry never breaks a call."""

    def __init__(self, telemetry: Telemetry | None) -> None:
        self.telemetry = telemetry
        meter = getattr(telemetry, "meter", None)
        self._phase = self._weight = self._aborts = None
        if meter is not None:
            try:
                self._phase = meter.create_gauge(METRIC_PHASE, description="Rollout phase "
                                                 "(0 shadow, 1 step, 2 paused, 3 promoted, 4 aborted)")
                self._weight = meter.create_gauge(METRIC_WEIGHT, unit="%",
                                                  description="Traffic share of the candidate")
                self._aborts = meter.create_counter(METRIC_ABORTS, unit="{rollout}",
                                                    description="Aborted rollouts by reason")
            except Exception:
                _log.warning("guardrails.telemetry_failed", metric="rollout", exc_info=True)

    def transitioned(self, state: RolloutState, policy: RolloutPolicy, check: str) -> None:
        attributes = {ATTR_PHASE: state.phase, ATTR_ATTEMPT: state.attempt}
        try:
            if self._phase is not None and self._weight is not None:
                self._phase.set(PHASE_CODES[state.phase], attributes)
                self._weight.set(state.weight(policy), attributes)
            if state.phase == "aborted" and self._aborts is not None:
                self._aborts.add(1, {ATTR_ABORT_REASON: check or "operator"})
        except Exception:
            _log.warning("guardrails.telemetry_failed", metric="rollout", exc_info=True)


def transition_details(state: RolloutState, policy: RolloutPolicy, action: str,
                       findings: Sequence[Finding] = ()) -> dict[str, Any]:
    """The ledger event's fields for a transition into ``state``."""
    return {"action": action, "attempt": state.attempt, "seq": state.seq, "phase": state.phase,
            "step": state.step, "weight": state.weight(policy), "candidate": state.candidate,
            "incumbent": state.incumbent, "reason": state.reason,
            "findings": [f.model_dump(mode="json") for f in findings]}


def record_transition(ledger: Ledger, state: RolloutState, policy: RolloutPolicy, action: str,
                      findings: Sequence[Finding] = (), **extra: Any) -> int:
    """Append the transition to the ledger; returns the entry's index."""
    details = transition_details(state, policy, action, findings)
    return ledger.record_event(ROLLOUT_EVENT, **details, **extra).index


def apply_action(store: RolloutStore, ledger: Ledger, policy: RolloutPolicy,
                 state: RolloutState, action: Action, reason: str, *,
                 findings: Sequence[Finding] = (), source: str = "rollout",
                 metrics: RolloutMetrics | None = None) -> RolloutState | None:
    """Take ``action`` if ``state`` is still the stored one; ``None`` when another replica moved
    it first (re-read and decide again). Raises ``InvalidTransition`` for a disallowed action.

    The store's compare-and-swap comes first, the ledger entry second: once a state is final
    in the store no replica can move it, so an abort recorded first always wins. Entering
    the last step records the promotion in the ledger (compare-and-swap on the served version).
    A move a crash left out of the ledger is recorded first (``repair``).
    """
    new = transition(state, action, policy, reason)
    behind = _ledger_behind(ledger, state)
    if behind == "recording":
        return None  # its writer is recording the move right now: decide again afterwards
    if behind == "crashed":
        # A crash left the ledger a move behind the store: record that move first, so this
        # one follows it in the ledger (and re-read if the repair changed the state).
        fixed = repair(store, ledger, policy, state)
        if fixed.state is None or fixed.state.seq != state.seq:
            return None
    telemetry = metrics.telemetry if metrics is not None else None
    span_cm = telemetry.span(SPAN_TRANSITION, {ATTR_ATTEMPT: state.attempt, ATTR_PHASE: new.phase}
                             ) if telemetry is not None else None
    with span_cm if span_cm is not None else _null():
        if not store.swap(state, new):
            return None
        if new.phase == "promoted":
            new = _promote(store, ledger, policy, new, findings, source)
        record_transition(ledger, new, policy, action, findings, source=source)
    if metrics is not None:
        metrics.transitioned(new, policy, findings[0].check if findings else "")
    _log.info("guardrails.rollout_transition", attempt=new.attempt, action=action,
              phase=new.phase, step=new.step, weight=new.weight(policy), reason=new.reason)
    return new


REPAIR_GRACE = 30.0
"""Seconds after a move before another replica may record it for a writer that crashed: a
live writer records its move within milliseconds of the store's compare-and-swap."""


def _ledger_behind(ledger: Ledger, state: RolloutState) -> str | None:
    """``None`` when the ledger records ``state``; ``recording`` when it lags but the move is
    younger than ``REPAIR_GRACE``; ``crashed`` when its writer had that long. An attempt
    without any ledger entry is left to ``repair`` (an operator's ``status --repair``): its
    start may be on its way, and rolling it back is not a replica's guess to make."""
    last, behind = lag(ledger, state)
    if not behind or last is None:
        return None
    young = (datetime.now(UTC) - state.entered_at).total_seconds() < REPAIR_GRACE
    return "recording" if young else "crashed"


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _promote(store: RolloutStore, ledger: Ledger, policy: RolloutPolicy, state: RolloutState,
             findings: Sequence[Finding], source: str) -> RolloutState:
    """Record the candidate as served; a served version that moved meanwhile aborts instead."""
    decision = Decision.accept(
        [Finding(check="rollout", passed=True,
                 message=f"rollout attempt {state.attempt[:12]} reached 100 % on live evidence",
                 evidence={"attempt": state.attempt, "steps": list(policy.steps)}), *findings],
        parent=state.incumbent, candidate=state.candidate, proposal_id=state.proposal_id,
        kind="rollout", source=source)
    problem = None
    try:
        # Served already: another replica (or repairer) recorded this very promotion first.
        if ledger.promote(decision, state.incumbent) is None \
                and ledger.served_version() != state.candidate:
            problem = "another version was promoted during the rollout"
    except Exception as exc:
        problem = f"recording the promotion failed ({type(exc).__name__}: {exc})"
    if problem is None:
        return state
    aborted = state.model_copy(update={"phase": "aborted", "seq": state.seq + 1,
                                       "reason": f"{problem}; nothing was promoted"})
    store.swap(state, aborted)
    return aborted


def evaluate(store: RolloutStore, ledger: Ledger, policy: RolloutPolicy,
             state: RolloutState, *, violation: str | None = None,
             metrics: RolloutMetrics | None = None,
             now: datetime | None = None) -> tuple[RolloutState, Judgement]:
    """Judge the stored state's step on all replicas' evidence and take the action it asks
    (abort over everything). Returns the state now stored and the judgement."""
    current = store.get(state.attempt) or state
    if current.final or current.phase == "paused":
        return current, Judgement(action=None)
    elapsed = ((now or datetime.now(UTC)) - current.entered_at).total_seconds()
    evidence = store.evidence(current, elapsed)
    if violation is not None:
        evidence = evidence.model_copy(update={"safety_violation": violation})
    verdict = judge(evidence, policy, canary=current.canary)
    if verdict.action is None:
        return current, verdict
    moved = apply_action(store, ledger, policy, current, verdict.action, verdict.reason,
                         findings=verdict.findings, metrics=metrics)
    return (moved or store.get(state.attempt) or current), verdict


def operate(store: RolloutStore, ledger: Ledger, policy: RolloutPolicy, state: RolloutState,
            action: Action, reason: str, metrics: RolloutMetrics | None = None) -> RolloutState:
    """An operator's action on the stored state, retried once against a concurrent move."""
    for _ in range(3):
        current = store.get(state.attempt) or state
        moved = apply_action(store, ledger, policy, current, action, reason, source="operator",
                             metrics=metrics)
        if moved is not None:
            return moved
    raise RuntimeError("the rollout kept moving under the action (or its last move is still "
                       f"being recorded, for up to {REPAIR_GRACE:g} s); try again")


_SHADOW_COPY: contextvars.ContextVar[bool] = contextvars.ContextVar("_guardrails_shadow_copy",
                                                                    default=False)


def is_shadow_copy() -> bool:
    """``True`` while the guard's chain judges the answer a candidate gave to a shadow copy of
    a live call (no user made this call: a middleware with per-call state, such as a rate
    limit, should let it pass unchanged). The candidate never runs while it is ``True``."""
    return _SHADOW_COPY.get()


@contextlib.contextmanager
def judging_shadow_copy() -> Iterator[None]:
    """The block in which :func:`is_shadow_copy` is ``True`` (for the guard's shadow thread)."""
    token = _SHADOW_COPY.set(True)
    try:
        yield
    finally:
        _SHADOW_COPY.reset(token)


class Call:
    """One guarded call during a rollout: which arm answers, its response id, its clock."""

    __slots__ = ("answered", "arm", "pair", "rid", "started")

    def __init__(self, arm: str, rid: str) -> None:
        self.arm, self.rid = arm, rid
        self.answered = False
        self.pair: Any = None
        """The shadow pair this call's answer is one side of (its policies' verdict decides)."""
        self.started = time.perf_counter()


class LiveRollout:
    """The active rollout as one replica serves it (replaced whole when its state changes)."""

    def __init__(self, state: RolloutState, policy: RolloutPolicy, store: RolloutStore,
                 candidate: Any, metrics: RolloutMetrics | None = None) -> None:
        self.state, self.policy, self.store = state, policy, store
        self.candidate = candidate
        self.metrics = metrics
        self.shadow = state.active_phase == "shadow"
        self.assigner = Assigner(state.salt, state.weight(policy), policy.key)
        self._buffer: list[CallRow] = []
        self._ticks = 0
        self._urgent = False
        self._lock = threading.Lock()
        self.shadow_slots = threading.BoundedSemaphore(policy.shadow_concurrency)
        self.metadata = {ATTR_ATTEMPT: state.attempt, ATTR_PHASE: state.label()}
        """Disclosed in every response during the rollout, and set on the call's span."""
        self.answering: Any = None
        """What the guard serves the candidate as (set by the guard on first use)."""

    def begin(self, metadata: Mapping[str, Any]) -> Call:
        """Choose the arm of one call (sticky per key; the incumbent in shadow and paused)."""
        rid = os.urandom(12).hex()
        if self.state.phase == "step" and self.assigner.to_candidate(metadata):
            return Call("candidate", rid)
        return Call("incumbent", rid)

    def copy_to_shadow(self) -> bool:
        """Whether this call is also sent to the candidate (a fraction, under the cap)."""
        if not self.shadow or self.state.phase != "shadow":
            return False
        if os.urandom(1)[0] >= self.policy.shadow_fraction * 256:
            return False
        return self.shadow_slots.acquire(blocking=False)

    def failed_by_latency(self, seconds: float) -> bool:
        return not math.isfinite(seconds) or seconds > self.policy.latency_limit

    def finish(self, call: Call, failed: bool, safety: str | None = None) -> None:
        """Buffer the call's outcome (a call blocked before any model answered is no evidence
        about either version)."""
        if call.answered:
            seconds = time.perf_counter() - call.started
            failed = failed or self.failed_by_latency(seconds)
            self.add((call.rid, self.state.attempt, self.state.step, call.arm, int(failed),
                      None, safety, seconds))

    def add(self, row: CallRow) -> None:
        with self._lock:
            self._buffer.append(row)
            if row[6] is not None:
                self._urgent = True  # a safety violation aborts at the next call, not later

    def tick(self) -> bool:
        """Count one call; ``True`` every ``evaluate_every`` calls (time to evaluate), and on
        the first call after a safety violation was buffered."""
        self._ticks += 1
        if self._urgent:
            self._urgent = False
            return True
        return self._ticks % self.policy.evaluate_every == 0

    def flush(self) -> None:
        """Write the buffered calls to the store (each id once, whatever happens twice)."""
        with self._lock:
            rows, self._buffer = self._buffer, []
        try:
            self.store.add_calls(rows)
        except Exception:
            with self._lock:
                self._buffer[:0] = rows  # kept for the next flush; evidence is never invented
            raise
