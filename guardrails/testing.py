"""Fakes and capture helpers for testing code that uses guardrails.

``DictClient`` is a complete ``SelfUpdatingClient`` whose behaviour is its
state: tests and plugin authors can script any candidate with it.
``StreamClient`` is a streaming one: its ``stream``/``astream`` are plain
generators yielding configured chunks, can fail part-way and record whether
the guard closed them; ``StreamOnlyClient`` is the same without ``invoke``.
``capture_telemetry`` needs ``opentelemetry-sdk`` (a
test dependency, not a runtime one).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from ._canonical import state_version
from ._messages import Request, StreamChunk
from .gate import UpdateProposal

Responder = Callable[[dict[str, Any], Request], Any]


def lookup_responder(state: dict[str, Any], request: Request) -> Any:
    """Answer ``state["answers"][input]`` (inputs as strings), else ``state["default"]``."""
    return state.get("answers", {}).get(str(request.input), state.get("default"))


class DictClient:
    """A self-updating client whose whole state is a JSON dict.

    ``invoke`` answers with ``responder(state, request)``; ``propose_update``
    returns the next queued patch (see ``queue``) as a proposal against the
    current state; ``with_state`` returns a new client sharing the responder
    and queue but not the state. ``calls`` records every request it answered.
    """

    def __init__(self, state: dict[str, Any], responder: Responder = lookup_responder) -> None:
        self._state = copy.deepcopy(state)
        self.responder = responder
        self.queued: list[dict[str, Any]] = []
        self.calls: list[Request] = []

    def queue(self, *patch: dict[str, Any], kind: str = "state", rationale: str = "") -> None:
        """Make the next ``propose_update`` propose ``patch``."""
        self.queued.append({"patch": list(patch), "kind": kind, "rationale": rationale})

    def invoke(self, request: Request) -> Any:
        self.calls.append(request)
        return self.responder(self._state, request)

    async def ainvoke(self, request: Request) -> Any:
        return self.invoke(request)

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def propose_update(self) -> UpdateProposal | None:
        if not self.queued:
            return None
        item = self.queued.pop(0)
        return UpdateProposal(parent=state_version(self._state), patch=item["patch"],
                              kind=item["kind"], rationale=item["rationale"])

    def with_state(self, state: dict[str, Any]) -> DictClient:
        clone = DictClient(state, self.responder)
        clone.queued = self.queued
        return clone

    def mutate_silently(self, key: str, value: Any) -> None:
        """Change the state without a proposal, as a misbehaving model would."""
        self._state[key] = value


Chunks = Sequence[str | StreamChunk]


class StreamClient(DictClient):
    """A ``SelfUpdatingClient`` with ``stream`` and ``astream``: plain generators of ``chunks``.

    ``chunks`` is a list of ``str``/``StreamChunk`` items, or
    ``chunks(state, request)`` returning one (so clients built by
    ``with_state`` can answer differently). ``invoke`` answers the text of
    the chunks joined. ``fail_after=n`` raises ``error`` (default
    ``RuntimeError``) after yielding ``n`` items. After each stream:
    ``closed`` is whether it was closed before it ended (the guard closing
    it on a block), ``yielded`` how many items it gave, ``opened`` how many
    streams were started.
    """

    def __init__(self, chunks: Chunks | Callable[[dict[str, Any], Request], Chunks] = (),
                 state: dict[str, Any] | None = None, *, fail_after: int | None = None,
                 error: BaseException | None = None) -> None:
        super().__init__(state if state is not None else {"name": "stream-client"})
        self.chunks = chunks
        self.fail_after = fail_after
        self.error = error
        self.closed = False
        self.yielded = 0
        self.opened = 0

    def _items(self, request: Request) -> list[str | StreamChunk]:
        chunks = self.chunks
        return list(chunks(self._state, request) if callable(chunks) else chunks)

    def invoke(self, request: Request) -> Any:
        self.calls.append(request)
        return "".join(c if isinstance(c, str) else c.text for c in self._items(request))

    def _fail_at(self, index: int) -> None:
        if self.fail_after is not None and index == self.fail_after:
            raise self.error if self.error is not None else RuntimeError("stream failed")

    def stream(self, request: Request) -> Iterator[str | StreamChunk]:
        items = self._items(request)
        self.calls.append(request)
        self.opened += 1
        self.closed, self.yielded = False, 0
        try:
            for index, item in enumerate(items):
                self._fail_at(index)
                yield item
                self.yielded += 1
            self._fail_at(len(items))
        except GeneratorExit:
            self.closed = True
            raise

    async def astream(self, request: Request) -> AsyncIterator[str | StreamChunk]:
        items = self._items(request)
        self.calls.append(request)
        self.opened += 1
        self.closed, self.yielded = False, 0
        try:
            for index, item in enumerate(items):
                self._fail_at(index)
                await asyncio.sleep(0)  # a real client awaits its network here
                yield item
                self.yielded += 1
            self._fail_at(len(items))
        except GeneratorExit:
            self.closed = True
            raise

    def with_state(self, state: dict[str, Any]) -> StreamClient:
        clone = StreamClient(self.chunks, state, fail_after=self.fail_after, error=self.error)
        clone.responder, clone.queued = self.responder, self.queued
        return clone


class StreamOnlyClient:
    """A stream-only client (``SelfUpdatingStreamClient``): ``StreamClient`` without ``invoke``.

    Same arguments and counters as ``StreamClient`` (``closed``, ``yielded``,
    ``opened``, ``calls``, ``queue``); ``with_state`` returns another
    ``StreamOnlyClient``. The guard answers its ``invoke`` and its canaries
    with its stream consumed whole.
    """

    def __init__(self, chunks: Chunks | Callable[[dict[str, Any], Request], Chunks] = (),
                 state: dict[str, Any] | None = None, *, fail_after: int | None = None,
                 error: BaseException | None = None, _inner: StreamClient | None = None) -> None:
        self._inner = _inner if _inner is not None else StreamClient(
            chunks, state, fail_after=fail_after, error=error)

    def __getattr__(self, name: str) -> Any:
        # Counters and queue() of the inner client; never invoke, and nothing private (so
        # pickling, which looks up __setstate__ before _inner exists, does not recurse).
        if name.startswith("_") or name in ("invoke", "ainvoke"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def stream(self, request: Request) -> Iterator[str | StreamChunk]:
        return self._inner.stream(request)

    def astream(self, request: Request) -> AsyncIterator[str | StreamChunk]:
        return self._inner.astream(request)

    def snapshot(self) -> dict[str, Any]:
        return self._inner.snapshot()

    def propose_update(self) -> UpdateProposal | None:
        return self._inner.propose_update()

    def with_state(self, state: dict[str, Any]) -> StreamOnlyClient:
        return StreamOnlyClient(_inner=self._inner.with_state(state))


def capture_telemetry() -> tuple[Any, Any, Any, Any]:
    """An SDK tracer provider and meter provider recording in memory.

    Returns ``(tracer_provider, span_exporter, meter_provider, metric_reader)``;
    read spans with ``span_exporter.get_finished_spans()`` and metrics with
    ``metric_reader.get_metrics_data()``.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    return tracer_provider, exporter, meter_provider, reader
