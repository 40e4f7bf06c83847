"""The runtime path of a guarded client: the chain's endpoint, GenAI spans, the silent-change watch.

``invoke``/``ainvoke`` are deliberate sync and async twins: the hot path pays
for no shared indirection (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from .._canonical import state_version
from .._decision import Finding
from .._errors import GuardrailViolation, UnusableResponseError
from .._messages import Request, Response, served_response
from .._telemetry import (
    ATTR_BLOCKED_BY,
    ATTR_OUTCOME,
    BLOCKED,
    ERROR,
    ERROR_TYPE,
    GENAI_DETAILS_EVENT,
    GENAI_INPUT_MESSAGES,
    GENAI_OUTPUT_MESSAGES,
    OK,
    Telemetry,
    as_text,
    attach_span,
    bound_log,
    end_span,
    record_failure,
    set_attributes,
)
from ._served import Served

if TYPE_CHECKING:
    from ._guard import Guard


def _log_client_error(version: str, exc: Exception) -> None:
    """One warning per failed call: the error's type (and for an unusable response, the
    adapter and reason), never its message, which may quote the request."""
    fields: dict[str, Any] = {"version": version, "error_type": type(exc).__qualname__}
    if isinstance(exc, UnusableResponseError):
        fields.update(adapter=exc.adapter, reason=exc.reason)
    with contextlib.suppress(Exception):  # telemetry never breaks a call
        bound_log(**fields).warning("guardrails.call_failed")


class RuntimePath:
    """The calls half of ``GuardedClient``: what every ``invoke`` passes through."""

    guard: Guard
    _telemetry: Telemetry
    _served: Served
    _blocked: Finding | None
    _rollout: Any
    _calls: int
    _following: bool
    _review_lock: threading.RLock
    _chain: Callable[[Request], Response]
    _achain: Callable[[Request], Coroutine[Any, Any, Response]]

    def rebuild(self, version: str) -> Any:
        raise NotImplementedError

    def _follow(self, version: str | None = None, *, wait: bool = True) -> None:
        raise NotImplementedError

    @property
    def blocked(self) -> bool:
        """Whether calls are refused after a silent change that could not be undone."""
        return self._blocked is not None

    def _rollout_answer(self, request: Request, rollout: Any) -> Response:
        raise NotImplementedError

    def _rollout_invoke(self, request: Request, rollout: Any) -> Response:
        raise NotImplementedError

    async def _arollout_invoke(self, request: Request, rollout: Any) -> Response:
        raise NotImplementedError

    def _poll_rollout(self) -> None:
        raise NotImplementedError

    def _endpoint(self, request: Request) -> Response:
        rollout = self._rollout
        if rollout is not None:
            return self._rollout_answer(request, rollout)
        served = self._served
        if served.genai is None:
            output = served.invoke(request)
        else:
            call = self._genai_start(served, request)
            try:
                output = served.invoke(request)
            except BaseException as exc:
                self._genai_end(served, call, None, exc)
                raise
            self._genai_end(served, call, output, None)
        return served_response(output, served.version, dict(served.disclosure))

    async def _aendpoint(self, request: Request) -> Response:
        rollout = self._rollout
        if rollout is not None:
            return await asyncio.to_thread(self._rollout_answer, request, rollout)
        served = self._served
        ainvoke = served.ainvoke
        call = None if served.genai is None else self._genai_start(served, request)
        try:
            if ainvoke is not None:
                output = await ainvoke(request)
            else:
                output = await asyncio.to_thread(served.invoke, request)
        except BaseException as exc:
            if call is not None:
                self._genai_end(served, call, None, exc)
            raise
        if call is not None:
            self._genai_end(served, call, output, None)
        return served_response(output, served.version, dict(served.disclosure))

    def _genai_start(self, served: Served, request: Request) -> tuple[Any, Any, float]:
        """Open the GenAI client span (only under a recording guard span) and start the clock."""
        span = token = None
        if trace.get_current_span().is_recording():
            try:
                span = self._telemetry.tracer.start_span(
                    served.genai_span_name, kind=trace.SpanKind.CLIENT, attributes=served.genai)
                if self._telemetry.capture_spans:
                    span.set_attribute(GENAI_INPUT_MESSAGES, as_text(request.input))
                if self._telemetry.capture_events:
                    span.add_event(GENAI_DETAILS_EVENT, {GENAI_INPUT_MESSAGES: as_text(request.input)})
            except Exception:
                span = None
            token = None if span is None else attach_span(span)
        return span, token, time.perf_counter()

    def _genai_end(self, served: Served, call: tuple[Any, Any, float], output: Any,
                   exc: BaseException | None) -> None:
        span, token, started = call
        attributes = dict(served.genai or {})
        if exc is not None:
            attributes[ERROR_TYPE] = type(exc).__qualname__
        self._telemetry.record(self._telemetry.genai_duration, time.perf_counter() - started,
                               attributes)
        if span is None:
            return
        if exc is not None:
            record_failure(span, exc)
        else:
            try:
                if self._telemetry.capture_spans:
                    span.set_attribute(GENAI_OUTPUT_MESSAGES, as_text(output))
                if self._telemetry.capture_events:
                    span.add_event(GENAI_DETAILS_EVENT, {GENAI_OUTPUT_MESSAGES: as_text(output)})
            except Exception:
                pass  # telemetry never breaks a call
        end_span(span, token)

    def _before_call(self) -> None:
        if self._blocked is not None:
            raise GuardrailViolation(self._blocked.message, policy="silent_modification",
                                     findings=(self._blocked,))
        self._calls += 1
        every = self.guard.integrity_check_every
        if every and self._calls % every == 0:
            if not self._following:
                self._follow(wait=False)
            self._poll_rollout()
            self.check_integrity()
            if self._blocked is not None:
                self._before_call()

    def _failed_call(self, span: Any, exc: BaseException) -> None:
        telemetry = self._telemetry
        if isinstance(exc, GuardrailViolation):
            telemetry.count(telemetry.invocations, BLOCKED)
            telemetry.count(telemetry.blocked, {ATTR_BLOCKED_BY: exc.policy})
            if span is not None:
                set_attributes(span, {ATTR_BLOCKED_BY: exc.policy, ATTR_OUTCOME: "blocked"})
        else:
            telemetry.count(telemetry.invocations, ERROR)
            if isinstance(exc, Exception):
                _log_client_error(self._served.version, exc)
        if span is not None:
            record_failure(span, exc)

    def invoke(self, request: Request | Any) -> Response:
        """Answer through the runtime chain; ``request`` may be a ``Request`` or a bare input.

        Raises ``GuardrailViolation`` when a policy blocks the call; the
        client's own exceptions propagate unchanged (an adapter's
        ``UnusableResponseError`` too), each counted as an ``error`` outcome,
        marked on the span and logged as ``guardrails.call_failed``.
        """
        if type(request) is not Request:
            request = Request(input=request)
        telemetry = self._telemetry
        span = telemetry.start_invoke_span(self._served.version)
        token = None if span is None else attach_span(span)
        try:
            self._before_call()
            rollout = self._rollout
            response = (self._chain(request) if rollout is None
                        else self._rollout_invoke(request, rollout))
        except BaseException as exc:
            self._failed_call(span, exc)
            raise
        finally:
            if span is not None:
                end_span(span, token)
        telemetry.count(telemetry.invocations, OK)
        return response

    async def ainvoke(self, request: Request | Any) -> Response:
        """The async twin of ``invoke``."""
        if type(request) is not Request:
            request = Request(input=request)
        telemetry = self._telemetry
        span = telemetry.start_invoke_span(self._served.version)
        token = None if span is None else attach_span(span)
        try:
            self._before_call()
            rollout = self._rollout
            response = (await self._achain(request) if rollout is None
                        else await self._arollout_invoke(request, rollout))
        except BaseException as exc:
            self._failed_call(span, exc)
            raise
        finally:
            if span is not None:
                end_span(span, token)
        telemetry.count(telemetry.invocations, OK)
        return response

    def check_integrity(self) -> Finding | None:
        """Snapshot the served client now; on a silent change, restore or block.

        Returns the finding describing the change, or ``None`` when the state
        is the recorded one. Every detection is logged and recorded.
        """
        served = self._served
        try:
            found = state_version(served.client.snapshot())
        except Exception as exc:
            found = f"unreadable ({type(exc).__name__})"
        if found == served.version:
            return None
        finding = Finding(
            check="silent_modification", passed=False,
            message=f"the served client changed its own state without a proposal "
                    f"(expected {served.version[:12]}, found {found[:12]})",
            evidence={"expected": served.version, "found": found,
                      "action": self.guard.on_silent_modification})
        self._telemetry.count(self._telemetry.silent_modifications,
                              {"guardrails.action": self.guard.on_silent_modification})
        bound_log(expected=served.version, found=found,
                  action=self.guard.on_silent_modification).warning(
                      "guardrails.silent_modification")
        try:
            self.guard.ledger.record_event("silent_modification", expected=served.version,
                                           found=found, action=self.guard.on_silent_modification)
        except Exception:
            bound_log().exception("guardrails.ledger_write_failed", event="silent_modification")
        if self.guard.on_silent_modification == "restore":
            try:
                restored = served.with_client(self.rebuild(served.version))
                if self._served is served:  # a promotion meanwhile replaced the changed client
                    self._served = restored
            except Exception as exc:
                self._blocked = finding.model_copy(update={
                    "message": finding.message + f"; restoring failed ({exc}), calls blocked"})
        else:
            self._blocked = finding
        return finding

    def restore(self) -> None:
        """Rebuild the served client from the ledger's served state and unblock calls."""
        with self._review_lock:
            served = self._served
            self._served = served.with_client(self.rebuild(served.version))
            self._blocked = None
