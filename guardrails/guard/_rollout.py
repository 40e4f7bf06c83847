"""The rollout half of ``GuardedClient``: entering a rollout, the split on the hot path,
shadow copies, delayed feedback, evaluation on the replica's schedule and following the store.

The runtime path pays for this only while a rollout is active (``_rollout`` is
not ``None``): one attribute test otherwise.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .._canonical import state_version
from .._client import whole_answerer
from .._decision import Decision, Finding
from .._errors import GuardrailViolation
from .._messages import DISCLOSURE_VERSION, Request, Response
from .._telemetry import ATTR_VERSION, bound_log, set_attributes
from .._threads import _start_daemon, call_with_timeout
from ..chain import build_chain
from ..rollout import (
    ATTR_ARM,
    Action,
    Call,
    LiveRollout,
    RolloutMetrics,
    RolloutPolicy,
    RolloutState,
    RolloutStore,
    evaluate,
    judging_shadow_copy,
    operate,
    record_transition,
    start,
    store_for,
)
from ..stats import PairCounts
from ._served import Served, serve

if TYPE_CHECKING:
    from ._guard import Guard

ANSWERS_KEPT = 10_000
_IN_FLIGHT = object()
"""Kept for a shadow copy not answered yet: a label arriving first waits for the answer."""
_NO_ANSWER = object()
"""Kept for a shadow copy that raised: a label scores it as a failure."""
_ANSWERS_LOCK = threading.Lock()
"""Answers a replica keeps during a rollout, so ``expect`` can score them later."""
RESPONSE_ID = "guardrails.response_id"
"""Response metadata during a rollout: the id ``feedback`` takes."""
ROLLOUT_ARM = ATTR_ARM
_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("_guardrails_call",
                                                                    default=None)


class RolloutPath:
    """Mixed into ``GuardedClient``; see ``docs/rollout.md``."""

    guard: Guard
    _served: Served
    _review_lock: threading.RLock
    _rollout: LiveRollout | None = None
    _rollout_store: RolloutStore | None = None
    _rollout_metrics: RolloutMetrics | None = None
    _answers: OrderedDict[str, Any] | None = None
    _waiting: dict[str, tuple[Any, Callable[[Any, Any], Any] | None]] | None = None
    _late: list[tuple[str, bool]] | None = None
    _chain: Callable[[Request], Response]
    # RuntimePath's, found through GuardedClient's MRO (annotations only: no shadowing stub).
    _genai_start: Callable[[Served, Request], tuple[Any, Any, float]]
    _genai_end: Callable[[Served, tuple[Any, Any, float], Any, BaseException | None], None]
    _achain: Callable[[Request], Coroutine[Any, Any, Response]]

    def rebuild(self, version: str) -> Any:
        raise NotImplementedError

    def swap(self, client: Any, version: str, decision: Decision) -> None:
        raise NotImplementedError

    @property
    def _policy(self) -> RolloutPolicy:
        policy = self.guard.rollout
        assert policy is not None  # only called with a rollout configured
        return policy

    @property
    def rollout_store(self) -> RolloutStore:
        """The store this guard's replicas share the rollout through (opened on first use)."""
        if self._rollout_store is None:
            self._rollout_store = store_for(self.guard.ledger)
            self._rollout_metrics = RolloutMetrics(self.guard.telemetry)
        return self._rollout_store

    # ------------------------------------------------------------------ entering a rollout

    def begin_rollout(self, decision: Decision, client: Any, evidence: Any,
                      proposal: dict[str, Any] | None) -> Decision:
        """Start a rollout of an accepted candidate (the gate's promotion stage calls this).

        Returns the gate's acceptance with a ``rollout`` finding; the served
        version changes only when the rollout reaches 100 %. Rejected when
        another rollout is in progress.
        """
        policy, ledger = self._policy, self.guard.ledger
        assert decision.candidate is not None
        shadow_ok = policy.shadow and getattr(client, "side_effect_free", False) is True
        findings = list(decision.findings)
        if policy.shadow and not shadow_ok:
            findings.append(Finding(check="rollout_shadow", passed=True, message=(
                "shadow skipped: the client does not declare side_effect_free = True, so live "
                "requests are never copied to the candidate; the rollout starts at the first step")))
        state = start(decision.candidate, self._served.version, policy,
                      proposal_id=decision.proposal_id, canary=_canary_pairs(evidence),
                      shadow=shadow_ok)
        if not self.rollout_store.start(state):
            return Decision.reject([Finding(
                check="rollout_busy", passed=False,
                message="another rollout is in progress; abort or finish it first "
                        "(guardrails rollout status)")], **_ids(decision))
        try:
            index = record_transition(ledger, state, policy, "start", findings, salt=state.salt,
                                      proposal=proposal, canary=None if state.canary is None
                                      else state.canary.model_dump())
        except Exception:
            # Unrecorded, so it never ran: end it in the store before the gate reports an error.
            self.rollout_store.swap(state, state.model_copy(update={
                "phase": "aborted", "seq": state.seq + 1,
                "reason": "recording the start in the ledger failed"}))
            raise
        self._rollout = LiveRollout(state, policy, self.rollout_store, client,
                                    self._rollout_metrics)
        if self._rollout_metrics is not None:
            self._rollout_metrics.transitioned(state, policy, "")
        findings.append(Finding(check="rollout", passed=True, message=(
            f"accepted into rollout attempt {state.attempt[:12]} ({state.label()}); the served "
            "version changes only when the rollout reaches 100 %"),
            evidence={"attempt": state.attempt, "entry": index, "phase": state.phase}))
        return decision.model_copy(update={"findings": tuple(findings)})

    # ------------------------------------------------------------------ the hot path

    def _rollout_invoke(self, request: Request, rollout: LiveRollout) -> Response:
        call = rollout.begin(request.metadata)
        token = _CALL.set(call)
        try:
            response = self._chain(request)
        except BaseException as exc:
            self._settle(rollout, call, exc)
            raise
        finally:
            _CALL.reset(token)
        self._settle(rollout, call, None)
        return response

    async def _arollout_invoke(self, request: Request, rollout: LiveRollout) -> Response:
        call = rollout.begin(request.metadata)
        token = _CALL.set(call)
        try:
            response = await self._achain(request)
        except BaseException as exc:
            self._settle(rollout, call, exc)
            raise
        finally:
            _CALL.reset(token)
        self._settle(rollout, call, None)
        return response

    def _settle(self, rollout: LiveRollout, call: Call, exc: BaseException | None) -> None:
        # In shadow the evidence is the pairs: the user only ever saw the incumbent, and the
        # chain's verdict on its answer (an output policy's block included) is its side.
        if call.pair is not None:
            call.pair.set("incumbent", _BLOCKED if isinstance(exc, GuardrailViolation)
                          else _OK if exc is None else _FAILED)
        if not rollout.shadow:
            safety = None
            if (call.arm == "candidate" and isinstance(exc, GuardrailViolation)
                    and exc.policy in rollout.policy.safety_policies):
                safety = f"policy {exc.policy!r} blocked its answer"
            rollout.finish(call, exc is not None, safety)
        if rollout.tick():
            self._rollout_due(rollout)

    def _rollout_answer(self, request: Request, rollout: LiveRollout) -> Response:
        """The endpoint during a rollout: the assigned arm answers, shadow copies go out."""
        served, call = self._served, _CALL.get()
        self._score_late()
        candidate = call is not None and call.arm == "candidate"
        if call is not None:
            call.answered = True
        if candidate:
            answering = rollout.answering
            if answering is None:
                answering = rollout.answering = serve(rollout.candidate, rollout.state.candidate,
                                                      datetime.now(UTC))
            output, version = self._call_model(answering, request), rollout.state.candidate
        else:
            pair = (_Pair(rollout, call, self._keep, self._police)
                    if rollout.copy_to_shadow() else None)
            if pair is not None:
                if call is not None:
                    self._keep(call.rid + ":shadow", _IN_FLIGHT)
                pair.send(request)
            try:
                output = self._call_model(served, request)
            except BaseException:
                if pair is not None:
                    pair.set("incumbent", _FAILED)
                raise
            if pair is not None:
                if rollout.failed_by_latency(time.perf_counter() - pair.started):
                    pair.set("incumbent", _FAILED)
                elif call is not None:
                    call.pair = pair  # _settle sets its side once the output policies ran
                else:
                    pair.set("incumbent", _OK)
            version = served.version
        if call is not None:
            self._keep(call.rid, output)
        arm = "candidate" if candidate else "incumbent"
        span = trace.get_current_span()
        if span.is_recording():
            # The guard's span says which version answered (not only which one is served).
            set_attributes(span, {ATTR_VERSION: version, ROLLOUT_ARM: arm, **rollout.metadata})
        return Response(output=output, version=version, metadata={
            **served.disclosure, DISCLOSURE_VERSION: version, **rollout.metadata,
            ROLLOUT_ARM: arm, RESPONSE_ID: call.rid if call is not None else ""})

    def _call_model(self, served: Served, request: Request) -> Any:
        """The arm's model call, in a GenAI client span when the client declares its
        attributes (as outside a rollout)."""
        if served.genai is None:
            return served.invoke(request)
        call = self._genai_start(served, request)
        try:
            output = served.invoke(request)
        except BaseException as exc:
            self._genai_end(served, call, None, exc)
            raise
        self._genai_end(served, call, output, None)
        return output

    def _police(self, request: Request, output: Any, version: str) -> tuple[int, str | None]:
        """Run the guard's chain on a shadow copy's answer, as if it were served: ``_OK``, or
        ``_BLOCKED`` and, for a policy in ``safety_policies``, the violation in words.

        The chain's endpoint returns the answer already given (the candidate is not called
        again); ``is_shadow_copy()`` is true meanwhile, so a middleware with per-call state
        can let the copy pass (it is no user call). The request is the copy, unmarked.
        """
        answer = Response(output=output, version=version, metadata={
            **self._served.disclosure, DISCLOSURE_VERSION: version})
        try:
            chain = build_chain(self.guard.middleware, lambda _request: answer)
        except Exception:
            return _OK, None  # async-only middleware: the sync chain never ran for anyone
        try:
            with judging_shadow_copy():
                chain(request)
        except GuardrailViolation as exc:
            safety = (f"policy {exc.policy!r} blocked its shadow answer"
                      if exc.policy in self._policy.safety_policies else None)
            return _BLOCKED, safety
        except Exception:
            return _FAILED, None
        return _OK, None

    # ------------------------------------------------------------------ evaluation and following

    def _rollout_due(self, rollout: LiveRollout) -> None:
        """Flush and evaluate on this replica, unless a review or evaluation holds the lock."""
        if not self._review_lock.acquire(blocking=False):
            return
        try:
            self._evaluate(rollout)
        except Exception as exc:
            bound_log(attempt=rollout.state.attempt).warning(
                "guardrails.rollout_evaluation_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._review_lock.release()

    def _evaluate(self, rollout: LiveRollout) -> RolloutState:
        # Labels that waited for their shadow answer first: a pair in the buffer is then
        # judged with its candidate's score, never as the pass its missing label would read as.
        self._score_late()
        rollout.flush()
        state, _ = evaluate(self.rollout_store, self.guard.ledger, rollout.policy, rollout.state,
                            violation=_moved(rollout), metrics=self._rollout_metrics)
        self._adopt(state, rollout)
        return state

    def rollout_evaluate(self) -> RolloutState | None:
        """Flush this replica's evidence and evaluate the step now; the state afterwards."""
        with self._review_lock:
            self._sync_rollout()
            rollout = self._rollout
            return None if rollout is None else self._evaluate(rollout)

    def rollout_status(self) -> RolloutState | None:
        """The active rollout's state, else the last one that ended (``None``: never rolled out)."""
        if self.guard.rollout is None:
            return None
        return self.rollout_store.latest()

    def rollout_action(self, action: Action, reason: str = "operator") -> RolloutState:
        """Advance, pause, resume or abort the active rollout as an operator (ledgered).

        Raises ``LookupError`` when no rollout is active and ``InvalidTransition``
        when the action is not allowed in the current phase.
        """
        with self._review_lock:
            self._sync_rollout()
            rollout = self._rollout
            if rollout is None:
                raise LookupError("no rollout is in progress")
            rollout.flush()
            state = operate(self.rollout_store, self.guard.ledger, rollout.policy,
                            rollout.state, action, reason, self._rollout_metrics)
            self._adopt(state, rollout)
            return state

    def _adopt(self, state: RolloutState, rollout: LiveRollout | None) -> None:
        """Serve what ``state`` says, in one assignment: the candidate on promotion, the
        incumbent alone on abort, a new split on a new step."""
        if state.phase == "promoted":
            if self._served.version != state.candidate:
                client = rollout.candidate if rollout is not None else self.rebuild(state.candidate)
                self._served = serve(client, state.candidate, datetime.now(UTC))
            self._rollout = None
        elif state.phase == "aborted":
            self._rollout = None
            if rollout is not None:
                bound_log(attempt=state.attempt, reason=state.reason).warning(
                    "guardrails.rollout_aborted")
        elif rollout is None or rollout.state.attempt != state.attempt:
            self._rollout = LiveRollout(state, self._policy, self.rollout_store,
                                        self.rebuild(state.candidate), self._rollout_metrics)
        elif rollout.state.seq != state.seq:
            rollout.flush()
            self._rollout = LiveRollout(state, self._policy, self.rollout_store,
                                        rollout.candidate, self._rollout_metrics)

    def _poll_rollout(self) -> None:
        """``_sync_rollout`` on the integrity schedule: never waits, never raises."""
        if self.guard.rollout is None or not self._review_lock.acquire(blocking=False):
            return
        try:
            self._sync_rollout()
        except Exception as exc:
            bound_log().warning("guardrails.rollout_follow_failed",
                                error=f"{type(exc).__name__}: {exc}")
        finally:
            self._review_lock.release()

    def _sync_rollout(self) -> None:
        """Follow the store: pick up a rollout another replica started, stepped or ended."""
        if self.guard.rollout is None:
            return
        store, current = self.rollout_store, self._rollout
        active = store.active()
        if active is not None:
            self._adopt(active, current)
        elif current is not None:
            ended = store.get(current.state.attempt)
            self._adopt(ended or current.state.model_copy(update={"phase": "aborted"}), current)

    def _keep(self, rid: str, output: Any) -> None:
        with _ANSWERS_LOCK:
            answers = self._answers
            if answers is None:
                answers = self._answers = OrderedDict()
            answers[rid] = output
            if len(answers) > ANSWERS_KEPT:
                answers.popitem(last=False)
            waiting = (self._waiting or {}).pop(rid, None) if output is not _IN_FLIGHT else None
        if waiting is not None:
            # The label came before the shadow copy's answer: score it on the next call of
            # the serving thread (this may be the shadow thread, which never writes the store),
            # so a late copy is judged like an early one, never skipped.
            expected, check = waiting
            ok = False if output is _NO_ANSWER else _expected(output, expected, check)
            with _ANSWERS_LOCK:
                if self._late is None:
                    self._late = []
                self._late.append((rid, ok))

    def _score_late(self) -> None:
        """Record the scores of shadow copies that answered after their label arrived."""
        if not self._late:
            return
        with _ANSWERS_LOCK:
            late, self._late = self._late, []
        for rid, ok in late:
            self.feedback(rid, ok)

    def expect(self, response_id: str, expected: Any,
               check: Callable[[Any, Any], Any] | None = None) -> int:
        """Score a response given during a rollout once its right answer is known (a label
        that arrives later): the answer the user got and, in shadow, the candidate's copy.

        ``check(output, expected)`` decides (default ``==``; a result as in
        ``feedback``). Returns how many answers were newly scored. Raises
        ``KeyError`` when this replica no longer holds the answer (it keeps the
        last ``ANSWERS_KEPT``, on the replica that gave them).
        """
        self._score_late()
        answers: Mapping[str, Any] = self._answers or {}
        if response_id not in answers:
            raise KeyError(f"no answer {response_id!r} is kept on this replica; score answers "
                           "on the replica that gave them, or send feedback() instead")
        scored = 0
        for rid in (response_id, response_id + ":shadow"):
            with _ANSWERS_LOCK:
                output = answers.get(rid)
                if output is _IN_FLIGHT:
                    if self._waiting is None:
                        self._waiting = {}
                    self._waiting[rid] = (expected, check)
                    continue
            if rid in answers:
                ok = False if output is _NO_ANSWER else _expected(output, expected, check)
                scored += self.feedback(rid, ok)
        return scored

    def feedback(self, response_id: str, value: Any) -> bool:
        """Delayed feedback for a response given during a rollout (a label, a user rating).

        ``True``/``1.0`` and numbers from 0.5 to 1 count as good; ``False``,
        smaller numbers, NaN, infinities, ``None`` and anything else count as
        a failure of the version that answered (never as a pass). Each
        response counts once: returns ``False`` when it already had feedback.
        """
        if self.guard.rollout is None:
            raise LookupError("feedback needs a [rollout]; none is configured")
        rollout = self._rollout
        if rollout is not None:
            rollout.flush()
        return self.rollout_store.add_feedback(response_id, not _good(value))


def _expected(output: Any, expected: Any, check: Callable[[Any, Any], Any] | None) -> bool:
    """Whether ``output`` meets ``expected``; a check that raises or returns NaN is a failure."""
    try:
        return _good(check(output, expected)) if check is not None else bool(output == expected)
    except Exception:
        return False


def _good(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return math.isfinite(value) and 0.5 <= value <= 1.0
    return False


def _canary_pairs(evidence: Any) -> PairCounts | None:
    outcomes = getattr(evidence, "outcomes", None)
    if not outcomes:
        return None
    return PairCounts.from_pairs((o.incumbent_passed, o.candidate_passed) for o in outcomes
                                 if o.incumbent_passed is not None)


def _ids(decision: Decision) -> dict[str, Any]:
    return {"parent": decision.parent, "candidate": decision.candidate,
            "proposal_id": decision.proposal_id, "kind": decision.kind, "source": decision.source}


def _moved(rollout: LiveRollout) -> str | None:
    """A frozen-constraint violation: the candidate no longer reports the state it was
    accepted as (it changed itself while serving)."""
    try:
        found = state_version(call_with_timeout(rollout.candidate.snapshot, 10.0))
    except Exception as exc:
        found = f"unreadable ({type(exc).__name__})"
    if found == rollout.state.candidate:
        return None
    return (f"the candidate changed its own state while serving (accepted as "
            f"{rollout.state.candidate[:12]}, found {found[:12]})")


_OK, _FAILED, _BLOCKED = 0, 1, 2
"""A pair side's outcome: answered; raised or timed out (no answer); blocked by a policy."""
Police = Callable[[Request, Any, str], tuple[int, "str | None"]]


class _Pair:
    """One shadow pair: the candidate answers a copy in the background, the incumbent inline;
    whichever finishes second records the pair. The candidate's answer is dropped (never
    returned, so tool calls in it are never executed) after the guard's chain judged it."""

    def __init__(self, rollout: LiveRollout, call: Call | None,
                 keep: Callable[[str, Any], None], police: Police) -> None:
        self.rollout, self.call, self.keep, self.police = rollout, call, keep, police
        self._sides: dict[str, int] = {}
        self._safety: str | None = None
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def send(self, request: Request) -> None:
        copy = request.model_copy(deep=True)

        def shadow() -> None:
            started = time.perf_counter()
            output: Any = _NO_ANSWER
            outcome, safety = _FAILED, None
            try:
                output = whole_answerer(self.rollout.candidate)(copy)
                if not self.rollout.failed_by_latency(time.perf_counter() - started):
                    outcome = _OK
            except Exception:
                pass
            finally:
                self.rollout.shadow_slots.release()
            if outcome == _OK:
                outcome, safety = self.police(copy, output, self.rollout.state.candidate)
            if self.call is not None:
                self.keep(self.call.rid + ":shadow", output)
            self.set("candidate", outcome, safety)

        _start_daemon(shadow)

    def set(self, side: str, outcome: int, safety: str | None = None) -> None:
        with self._lock:
            if side in self._sides:
                return
            self._sides[side] = outcome
            self._safety = self._safety or safety
            if len(self._sides) < 2:
                return
        rid = self.call.rid if self.call is not None else ""
        state, rollout = self.rollout.state, self.rollout
        candidate, incumbent = self._sides["candidate"], self._sides["incumbent"]
        # Evaluated on a later call's schedule: the shadow thread never decides anything.
        if _FAILED in (candidate, incumbent) and rollout.policy.shadow_failures == "limits":
            # A side that gave no answer in time leaves nothing to compare: the copy ran in
            # the background, where a busy host, not the candidate, may be why it failed.
            if candidate != _OK:
                rollout.add((rid, state.attempt, state.step, "unpaired", 1, None,
                             self._safety, None))
            return
        rollout.add((rid, state.attempt, state.step, "pair", int(candidate != _OK),
                     int(incumbent != _OK), self._safety, None))
