"""The protocols a self-updating model client implements, and how a stream-only one answers whole."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from ._errors import UnusableResponseError
from ._messages import Request, StreamChunk
from ._threads import CallTimeout, run_sync

if TYPE_CHECKING:
    from .gate import UpdateProposal


@runtime_checkable
class SelfUpdatingClient(Protocol):
    """A model client that can change itself.

    ``invoke`` answers a request and returns the output (any value; the
    guard wraps it in a ``Response``). A client may also define
    ``async def ainvoke(request)``; without it, async calls run ``invoke``
    in a worker thread.

    Streaming is optional too: ``stream(request)`` may return an iterator
    (a generator) of ``str`` or ``StreamChunk``, each carrying only the new
    part, and ``astream(request)`` an async iterator (an async generator) of
    the same. The guard closes them (``close()``/``aclose()``) when it stops
    early, so release connections in ``finally``; an unusable stream raises
    ``UnusableResponseError``. Without them ``GuardedClient.stream`` answers
    through ``invoke`` as one chunk (docs/streaming.md).

    ``snapshot`` returns the whole mutable state as plain JSON, large
    artifacts referenced with ``blob_ref(digest)``. ``propose_update`` is the
    model's own self-improvement step: it returns a proposal (or ``None``)
    and must not change the client. ``with_state`` builds a *new* client
    from a state and must not touch ``self``.

    A client without ``invoke`` that streams (``SelfUpdatingStreamClient``,
    ``AsyncSelfUpdatingStreamClient``) is guarded too: its whole answer is
    its stream consumed whole (``answer_whole``).
    """

    def invoke(self, request: Request) -> Any: ...

    def snapshot(self) -> dict[str, Any]: ...

    def propose_update(self) -> UpdateProposal | None: ...

    def with_state(self, state: dict[str, Any]) -> SelfUpdatingClient: ...


@runtime_checkable
class SelfUpdatingStreamClient(Protocol):
    """A self-updating client that answers only as a stream (no ``invoke``).

    ``stream(request)`` is a generator of ``str``/``StreamChunk`` as in
    ``SelfUpdatingClient``; a client with only ``async def astream`` is
    accepted too (``AsyncSelfUpdatingStreamClient``). The guard wraps it
    like any client: ``GuardedClient.invoke``/``ainvoke`` and the canary
    runner consume its stream whole (``answer_whole``), so canaries judge
    the same answer a caller of ``invoke`` gets.
    """

    def stream(self, request: Request) -> Iterator[str | StreamChunk]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def propose_update(self) -> UpdateProposal | None: ...

    def with_state(self, state: dict[str, Any]) -> SelfUpdatingStreamClient: ...


@runtime_checkable
class AsyncSelfUpdatingStreamClient(Protocol):
    """A self-updating client that answers only as an async stream (``astream``)."""

    def astream(self, request: Request) -> AsyncIterator[str | StreamChunk]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def propose_update(self) -> UpdateProposal | None: ...

    def with_state(self, state: dict[str, Any]) -> AsyncSelfUpdatingStreamClient: ...


def answers_by_stream(client: Any) -> bool:
    """Whether ``client`` is stream-only: no ``invoke``, but ``stream`` or ``astream``."""
    return not callable(getattr(client, "invoke", None)) and (
        callable(getattr(client, "stream", None)) or callable(getattr(client, "astream", None)))


WHOLE_MAX_CHARS = 16 * 1024 * 1024
"""The most text and tool-call arguments a stream read whole may carry (16 Mi characters):
past it the stream is closed and the answer is unusable (``too_large``), so a stream that
never ends cannot fill the reviewing process's memory before the case's deadline."""


class _Joined:
    """A stream consumed whole: the text, and each tool call's id, name and arguments."""

    __slots__ = ("calls", "size", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[Any]] = {}
        self.size = 0

    def _count(self, chars: int, source: str) -> None:
        self.size += chars
        if self.size > WHOLE_MAX_CHARS:
            raise UnusableResponseError(
                f"{source}'s stream carried more than {WHOLE_MAX_CHARS:,} characters; it "
                "was closed there", adapter=source, reason="too_large")

    def add(self, item: Any, source: str) -> None:
        if type(item) is str:
            self._count(len(item), source)
            self.text.append(item)
            return
        if not isinstance(item, StreamChunk):
            raise UnusableResponseError(
                f"{source}'s stream yielded a {type(item).__name__}; a stream yields str or "
                "guardrails.StreamChunk", adapter=source, reason="wrong_type")
        self._count(len(item.text or "")
                    + sum(len(d.arguments or "") for d in item.tool_calls), source)
        if item.text:
            self.text.append(item.text)
        for delta in item.tool_calls:
            call = self.calls.setdefault(delta.index, [None, None, []])
            call[0] = call[0] if delta.id is None else delta.id
            call[1] = call[1] if delta.name is None else delta.name
            call[2].append(delta.arguments)
        # Reasoning is not part of the answer (as with the OpenAI adapter's invoke): it is
        # dropped here, never released unchecked; stream() shows it, checked.

    def answer(self, source: str) -> Any:
        text = "".join(self.text)
        if not self.calls:
            if not text:
                raise UnusableResponseError(
                    f"{source}'s stream ended without any text or tool call; an empty answer "
                    "is no answer", adapter=source, reason="empty_content")
            return text
        calls = []
        for index in sorted(self.calls):
            call_id, name, arguments = self.calls[index]
            if not isinstance(name, str) or not name:
                raise UnusableResponseError(
                    f"{source}'s stream sent tool call {index} without a name",
                    adapter=source, reason="wrong_schema")
            calls.append({"id": call_id, "name": name, "arguments": "".join(arguments)})
        return {"content": text or None, "tool_calls": calls}


def answer_whole(client: Any, request: Request, *, deadline: float | None = None) -> Any:
    """The answer of a stream-only client: its stream consumed whole, then closed.

    The text joined (a ``str``), or ``{"content": text | None, "tool_calls":
    [{"id", "name", "arguments"}]}`` when it called tools (the OpenAI
    adapter's shape); reasoning deltas are not part of the answer. Raises
    ``UnusableResponseError`` for an item that is neither ``str`` nor
    ``StreamChunk``, a stream with no text and no tool call, a tool call
    without a name, or more than ``WHOLE_MAX_CHARS`` characters (``too_large``,
    the stream closed there); whatever the stream raised propagates. ``deadline``
    (``time.monotonic()``): past it the stream is closed and ``CallTimeout``
    raised, so a stream that never ends does not hold its thread forever.
    A client with only ``astream`` runs it to completion on an event loop of
    its own (``run_sync``).
    """
    stream = getattr(client, "stream", None)
    if not callable(stream):
        return run_sync(aanswer_whole(client, request, deadline=deadline))
    source = type(client).__name__
    joined = _Joined()
    iterator = iter(stream(request))
    try:
        for item in iterator:
            joined.add(item, source)
            if deadline is not None and time.monotonic() > deadline:
                raise CallTimeout("the stream did not end in time")
    finally:
        close = getattr(iterator, "close", None)
        if callable(close):
            close()
    return joined.answer(source)


async def aanswer_whole(client: Any, request: Request, *, deadline: float | None = None) -> Any:
    """The async twin of ``answer_whole``: ``astream`` consumed whole (a client with only a
    sync ``stream`` is consumed in a worker thread)."""
    astream = getattr(client, "astream", None)
    if not callable(astream):
        return await asyncio.to_thread(answer_whole, client, request, deadline=deadline)
    source = type(client).__name__
    joined = _Joined()
    iterator = aiter(astream(request))
    try:
        async for item in iterator:
            joined.add(item, source)
            if deadline is not None and time.monotonic() > deadline:
                raise CallTimeout("the stream did not end in time")
    finally:
        aclose = getattr(iterator, "aclose", None)
        if callable(aclose):
            await aclose()
    return joined.answer(source)


def whole_answerer(client: Any) -> Callable[[Request], Any]:
    """How to get ``client``'s whole answer to one request: its ``invoke``, or for a
    stream-only client ``answer_whole`` over its stream."""
    invoke = getattr(client, "invoke", None)
    if callable(invoke):
        return cast("Callable[[Request], Any]", invoke)
    return functools.partial(answer_whole, client)
