"""The streaming half of ``GuardedClient``: ``stream``/``astream`` through the hold-back buffer.

A stream passes the same runtime path as ``invoke``: the integrity schedule,
the input side of every policy before the client's stream opens, the
version a rollout assigns, the output checks (``chain.StreamBuffer``, which
releases only cleared text), disclosure in the closing ``StreamEnd``, and
the invoke span, metrics and log line. ``stream`` and ``astream`` are twins,
like ``invoke`` and ``ainvoke``. See docs/streaming.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import context

from .._errors import GuardrailViolation, UnusableResponseError
from .._messages import DISCLOSURE_VERSION, REDACTIONS, Request, Response, StreamChunk, StreamEnd
from .._telemetry import (
    ATTR_OUTCOME,
    ATTR_STREAM_ABORT,
    ATTR_STREAM_CHUNKS,
    ATTR_STREAM_FIRST_RELEASE,
    ATTR_STREAM_MAX_HELD,
    EVENT_STREAM_ABORTED,
    OK,
    Telemetry,
    attach_span,
    bound_log,
    end_span,
    set_attributes,
)
from ..chain import OVERFLOW_POLICY, StreamBuffer, StreamInput, StreamPolicy
from ._rollout import RESPONSE_ID, ROLLOUT_ARM
from ._served import Served

if TYPE_CHECKING:
    from ._guard import Guard

Item = StreamChunk | StreamEnd
CLOSED = {ATTR_OUTCOME: "closed"}


class _Call:
    """One streamed call: what answers it, its buffer, its clock and counters."""

    __slots__ = ("buffer", "chunks", "client", "first", "genai", "inputs", "metadata", "rcall",
                 "request", "rollout", "served", "span", "started", "text", "upstream",
                 "version")

    def __init__(self, span: Any, served: Served, buffer: StreamBuffer) -> None:
        self.span, self.served, self.buffer = span, served, buffer
        self.client, self.version = served.client, served.version
        self.metadata: dict[str, Any] = dict(served.disclosure)
        self.rollout: Any = None
        self.rcall: Any = None
        self.request: Any = None
        """The request as the input policies left it: what the client is asked."""
        self.upstream: Any = None
        self.inputs: dict[str, dict[str, int]] | None = None
        """What each policy's input side redacted, ``{policy: {label: count}}``."""
        self.genai: Any = None
        self.chunks = 0
        self.started = time.perf_counter()
        self.first: float | None = None
        self.text: list[str] | None = None
        """The released text, kept only when something needs it (a rollout, content capture)."""

    def released(self, chunk: StreamChunk) -> StreamChunk:
        if self.first is None:
            self.first = time.perf_counter()
        if self.text is not None and chunk.text:
            self.text.append(chunk.text)
        return chunk

    def attributes(self, abort: str | None) -> dict[str, Any]:
        return {ATTR_STREAM_CHUNKS: self.chunks, ATTR_STREAM_MAX_HELD: self.buffer.max_seen,
                ATTR_STREAM_FIRST_RELEASE: None if self.first is None
                else self.first - self.started, ATTR_STREAM_ABORT: abort}


def _one_chunk(output: Any, client: Any) -> StreamChunk | str:
    if isinstance(output, StreamChunk | str):
        return output
    raise UnusableResponseError(
        f"stream() needs text, but {type(client).__name__} answered a {type(output).__name__}; "
        "call invoke() for answers that are not text", adapter=type(client).__name__,
        reason="wrong_type")


def _whole(response: Response) -> Iterator[Item]:
    """A response from ``invoke`` as a stream: its text in one chunk, then the end."""
    output = response.output
    if not isinstance(output, str):
        raise UnusableResponseError(
            f"stream() needs text, but the answer is a {type(output).__name__}; call invoke() "
            "for answers that are not text", adapter="guard", reason="wrong_type")
    if output:
        yield StreamChunk(text=output)
    yield StreamEnd(version=response.version, metadata=response.metadata)


def _upstream(client: Any, request: Request) -> Iterator[Any]:
    stream = getattr(client, "stream", None)
    if callable(stream):
        return iter(stream(request))
    return iter((_one_chunk(client.invoke(request), client),))


async def _aone(client: Any, request: Request) -> AsyncIterator[Any]:
    ainvoke = getattr(client, "ainvoke", None)
    output = (await ainvoke(request) if ainvoke is not None
              else await asyncio.to_thread(client.invoke, request))
    yield _one_chunk(output, client)


async def _athread(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    # A client with only a sync stream: each next() runs in a worker thread, so a slow
    # upstream never blocks the event loop.
    done = object()
    try:
        while (item := await asyncio.to_thread(next, iterator, done)) is not done:
            yield item
    finally:
        with contextlib.suppress(Exception):  # ValueError while a next() is still running
            getattr(iterator, "close", lambda: None)()


def _aupstream(client: Any, request: Request) -> AsyncIterator[Any]:
    astream = getattr(client, "astream", None)
    if callable(astream):
        return aiter(astream(request))
    if callable(getattr(client, "stream", None)):
        return _athread(iter(client.stream(request)))
    return _aone(client, request)


def _before(call: _Call, policy: StreamPolicy, request: Request) -> Request:
    """One policy's input side; what it says it redacted is kept for the ``StreamEnd``."""
    assert policy.before is not None
    result = policy.before(request)
    if not isinstance(result, StreamInput):
        return result
    if result.redactions:
        inputs = call.inputs if call.inputs is not None else {}
        inputs[policy.name] = dict(result.redactions)
        call.inputs = inputs
    return result.request


def _noted(call: _Call) -> dict[str, Any]:
    """The end's metadata: the disclosure plus ``guardrails.redactions`` in invoke's shape
    (``{policy: {"input": {label: n}, "output": {label: n}}}``), when anything was redacted."""
    outputs = call.buffer.redactions()
    if not (outputs or call.inputs):
        return call.metadata
    notes: dict[str, dict[str, dict[str, int]]] = {}
    for name, counts in (call.inputs or {}).items():
        notes.setdefault(name, {})["input"] = counts
    for name, counts in outputs.items():
        notes.setdefault(name, {})["output"] = counts
    return {**call.metadata, REDACTIONS: notes}


def _usage_attributes(span: Any, usage: dict[str, int] | None) -> None:
    """Token counts on the GenAI client span: a streaming adapter cannot reach the span."""
    if span is None or not usage:
        return
    for key in ("input_tokens", "output_tokens"):
        if isinstance(usage.get(key), int):
            span.set_attribute(f"gen_ai.usage.{key}", usage[key])


def _close(upstream: Any) -> None:
    close = getattr(upstream, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


async def _aclose(upstream: Any) -> None:
    aclose = getattr(upstream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class StreamPath:
    """Mixed into ``GuardedClient``: ``stream`` and ``astream``."""

    guard: Guard
    _telemetry: Telemetry
    _served: Served
    _rollout: Any

    def invoke(self, request: Request | Any) -> Response:
        raise NotImplementedError

    async def ainvoke(self, request: Request | Any) -> Response:
        raise NotImplementedError

    def _before_call(self) -> None:
        raise NotImplementedError

    def _failed_call(self, span: Any, exc: BaseException) -> None:
        raise NotImplementedError

    def _genai_start(self, served: Served, request: Request) -> tuple[Any, Any, float]:
        raise NotImplementedError

    def _genai_end(self, served: Served, call: tuple[Any, Any, float], output: Any,
                   exc: BaseException | None) -> None:
        raise NotImplementedError

    def _settle(self, rollout: Any, call: Any, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _keep(self, rid: str, output: Any) -> None:
        raise NotImplementedError

    def _score_late(self) -> None:
        raise NotImplementedError

    def stream(self, request: Request | Any) -> Iterator[StreamChunk | StreamEnd]:
        """Answer through the runtime chain as a stream: ``StreamChunk`` items, then a ``StreamEnd``.

        Only text every output policy has cleared is released (see
        docs/streaming.md). Input policies run before the client's stream
        opens. A block ends the iteration with ``GuardrailViolation`` (the
        client's stream is closed, no ``StreamEnd`` follows); so does passing
        ``stream_max_held`` (``policy == "stream_max_held"``); a client error
        mid-stream ends it with that error, releasing nothing held back.

        A client without ``stream``, or a guard with a middleware that has no
        streaming side (``streaming()``), answers through ``invoke`` and
        yields its text as one chunk.
        """
        if type(request) is not Request:
            request = Request(input=request)
        policies = self.guard.stream_policies
        client = self._served.client
        if policies is None or not callable(getattr(client, "stream", None)):
            return self._stream_via_invoke(request)
        return self._stream(request, policies)

    def astream(self, request: Request | Any) -> AsyncIterator[StreamChunk | StreamEnd]:
        """The async twin of ``stream``: ``async for item in guarded.astream(request)``.

        Uses the client's ``astream`` (an async generator), else its sync
        ``stream`` in a worker thread, else ``ainvoke`` as one chunk.
        """
        if type(request) is not Request:
            request = Request(input=request)
        return self._astream(request)

    def _stream_via_invoke(self, request: Request) -> Iterator[Item]:
        # A generator, so that nothing runs before the first next(), as with a real stream.
        yield from _whole(self.invoke(request))

    def _stream(self, request: Request, policies: tuple[StreamPolicy, ...]) -> Iterator[Item]:
        call = self._stream_open(request, policies)
        buffer = call.buffer
        try:
            call.upstream = upstream = _upstream(call.client, call.request)
            for item in upstream:
                call.chunks += 1
                out = buffer.feed(item)
                if out is not None:
                    yield call.released(out)
            tail = buffer.finish()
            if tail is not None:
                yield call.released(tail)
        except BaseException as exc:
            _close(call.upstream)
            self._stream_failed(call, exc)
            raise
        _close(upstream)
        yield self._stream_done(call)

    async def _astream(self, request: Request) -> AsyncIterator[Item]:
        policies = self.guard.stream_policies
        client = self._served.client
        if policies is None or not (callable(getattr(client, "astream", None))
                                    or callable(getattr(client, "stream", None))):
            for item in _whole(await self.ainvoke(request)):
                yield item
            return
        call = self._stream_open(request, policies)
        buffer = call.buffer
        try:
            call.upstream = upstream = _aupstream(call.client, call.request)
            async for item in upstream:
                call.chunks += 1
                out = buffer.feed(item)
                if out is not None:
                    yield call.released(out)
            tail = buffer.finish()
            if tail is not None:
                yield call.released(tail)
        except BaseException as exc:
            await _aclose(call.upstream)
            self._stream_failed(call, exc)
            raise
        await _aclose(upstream)
        yield self._stream_done(call)

    def _stream_open(self, request: Request, policies: tuple[StreamPolicy, ...]) -> _Call:
        """Everything before the first chunk: the span, the integrity schedule, the input side
        of each policy and the version that answers. Raises as ``invoke`` would."""
        telemetry = self._telemetry
        span = telemetry.start_invoke_span(self._served.version)
        token = None if span is None else attach_span(span)
        call = _Call(span, self._served, StreamBuffer(policies, self.guard.stream_max_held))
        try:
            self._before_call()
            for policy in policies:
                if policy.before is not None:
                    request = _before(call, policy, request)
            call.request = request
            self._assign(call, request)
            if call.served.genai is not None:
                genai = self._genai_start(call.served, request)
                if genai[1] is not None:
                    context.detach(genai[1])  # ended by hand: never left current across yields
                call.genai = (genai[0], None, genai[2])
        except BaseException as exc:
            self._failed_call(span, exc)
            if call.rollout is not None:
                self._settle(call.rollout, call.rcall, exc)
            if span is not None:
                end_span(span, token)
            raise
        if token is not None:
            with contextlib.suppress(Exception):
                context.detach(token)  # type: ignore[arg-type]
        return call

    def _assign(self, call: _Call, request: Request) -> None:
        """Which version answers: during a rollout the assigned arm, disclosed as ``invoke``
        does; streamed calls are never copied to a shadow candidate."""
        rollout = self._rollout
        if self._telemetry.capture_spans or self._telemetry.capture_events:
            call.text = []
        if rollout is None:
            return
        self._score_late()
        rcall = rollout.begin(request.metadata)
        rcall.answered = True
        call.rollout, call.rcall, call.text = rollout, rcall, []
        candidate = rcall.arm == "candidate"
        if candidate:
            call.client, call.version = rollout.candidate, rollout.state.candidate
        call.metadata = {**call.metadata, DISCLOSURE_VERSION: call.version, **rollout.metadata,
                         ROLLOUT_ARM: "candidate" if candidate else "incumbent",
                         RESPONSE_ID: rcall.rid}

    def _stream_done(self, call: _Call) -> StreamEnd:
        text = None if call.text is None else "".join(call.text)
        if call.genai is not None:
            _usage_attributes(call.genai[0], call.buffer.usage)
            self._genai_end(call.served, call.genai, text, None)
        if call.rollout is not None:
            self._keep(call.rcall.rid, text)
            self._settle(call.rollout, call.rcall, None)
        telemetry = self._telemetry
        if call.span is not None:
            set_attributes(call.span, call.attributes(None))
            end_span(call.span, None)
        telemetry.count(telemetry.invocations, OK)
        buffer = call.buffer
        return StreamEnd(version=call.version, metadata=_noted(call), usage=buffer.usage,
                         finish_reason=buffer.finish_reason)

    def _stream_failed(self, call: _Call, exc: BaseException) -> None:
        """A stream that ended early, recorded like a failed ``invoke`` plus why it ended."""
        closed = isinstance(exc, GeneratorExit | asyncio.CancelledError)
        policy = exc.policy if isinstance(exc, GuardrailViolation) else None
        reason = ("closed" if closed else "overflow" if policy == OVERFLOW_POLICY
                  else "blocked" if policy is not None else "error")
        span = call.span
        token = None if span is None else attach_span(span)
        try:
            if call.genai is not None:
                self._genai_end(call.served, call.genai, None, exc)
            if call.rollout is not None:
                self._settle(call.rollout, call.rcall, None if closed else exc)
            if span is not None:
                set_attributes(span, call.attributes(reason))
                with contextlib.suppress(Exception):
                    span.add_event(EVENT_STREAM_ABORTED, {ATTR_STREAM_ABORT: reason,
                                                          **({} if policy is None
                                                             else {"guardrails.blocked_by": policy})})
            if closed:
                self._telemetry.count(self._telemetry.invocations, CLOSED)
            else:
                self._failed_call(span, exc)
            if not closed:  # a caller that stops reading is no event worth a warning
                with contextlib.suppress(Exception):
                    bound_log(version=call.version, reason=reason, policy=policy,
                              chunks=call.chunks, error_type=type(exc).__qualname__).warning(
                                  "guardrails.stream_aborted")
        finally:
            if span is not None:
                end_span(span, token)

