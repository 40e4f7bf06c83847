"""The served version as the hot path sees it: one immutable tuple, swapped whole on promotion."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, NamedTuple

from .._client import aanswer_whole, whole_answerer
from .._messages import DISCLOSURE_LAST_CHANGE, DISCLOSURE_SELF_IMPROVING, DISCLOSURE_VERSION
from .._telemetry import GENAI_OPERATION, GENAI_REQUEST_MODEL


class Served(NamedTuple):
    """The version now serving and what the hot path needs of it (replaced, never mutated)."""

    client: Any
    version: str
    disclosure: dict[str, Any]
    genai: dict[str, Any] | None
    """The client's GenAI identity (``gen_ai.*`` attributes), if it declares one."""
    genai_span_name: str
    invoke: Callable[[Any], Any]
    """The client's whole answer to a request: its ``invoke``, or its stream consumed whole."""
    ainvoke: Callable[[Any], Coroutine[Any, Any, Any]] | None
    """The async twin (its ``ainvoke``, or its ``astream`` consumed whole), else ``None``:
    ``invoke`` in a worker thread."""

    def with_client(self, client: Any) -> Served:
        """The same version served by another client object (a rebuilt one)."""
        return self._replace(client=client, invoke=whole_answerer(client),
                             ainvoke=_async_answerer(client))


def serve(client: Any, version: str, last_change: datetime | None) -> Served:
    """What one served version needs on the hot path, computed once per promotion.

    A client may declare ``genai_attributes() -> dict`` with at least
    ``gen_ai.operation.name`` and ``gen_ai.request.model``; its calls then get
    a GenAI client span and the ``gen_ai.client.operation.duration`` metric.
    """
    declare = getattr(client, "genai_attributes", None)
    genai = dict(declare()) if callable(declare) else None
    name = ""
    if genai:
        name = f"{genai.get(GENAI_OPERATION, 'invoke')} {genai.get(GENAI_REQUEST_MODEL, '')}".strip()
    return Served(client, version, _disclosure(version, last_change), genai or None, name,
                  whole_answerer(client), _async_answerer(client))


def _async_answerer(client: Any) -> Callable[[Any], Coroutine[Any, Any, Any]] | None:
    ainvoke = getattr(client, "ainvoke", None)
    if callable(ainvoke):
        return ainvoke  # type: ignore[no-any-return]
    if not callable(getattr(client, "invoke", None)) and callable(getattr(client, "astream", None)):
        return functools.partial(aanswer_whole, client)
    return None


def _disclosure(version: str, last_change: datetime | None) -> dict[str, Any]:
    return {
        DISCLOSURE_VERSION: version,
        DISCLOSURE_SELF_IMPROVING: True,
        DISCLOSURE_LAST_CHANGE: last_change.isoformat() if last_change else None,
    }
