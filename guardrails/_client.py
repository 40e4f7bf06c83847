"""The protocol a self-updating model client implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._messages import Request
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
    """

    def invoke(self, request: Request) -> Any: ...

    def snapshot(self) -> dict[str, Any]: ...

    def propose_update(self) -> UpdateProposal | None: ...

    def with_state(self, state: dict[str, Any]) -> SelfUpdatingClient: ...
