"""Helpers for plugin tests: run built middleware around a scripted model, sync or async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import guardrails as gr


class Model:
    """A model endpoint that records the requests it saw and answers ``output``
    (or ``output(request)`` when it is callable)."""

    def __init__(self, output: Any = "ok") -> None:
        self.output = output
        self.seen: list[gr.Request] = []

    def __call__(self, request: gr.Request) -> gr.Response:
        self.seen.append(request)
        output = self.output(request) if callable(self.output) else self.output
        return gr.Response(output=output, version="v1")


def build(name: str, settings: dict[str, Any] | None = None) -> gr.PluginParts:
    """Load the installed plugin ``name`` and build it, exactly as a configuration would."""
    return gr.load_plugin(name).build(settings or {})


def run(middleware: Sequence[Any], input: Any, model: Model | None = None,
        metadata: dict[str, Any] | None = None) -> gr.Response:
    """Call the chain ``middleware`` -> ``model`` once (first middleware outermost)."""
    handler: Callable[[gr.Request], gr.Response] = model or Model()
    for link in reversed(middleware):
        handler = (lambda m, nxt: lambda request: m(request, nxt))(link, handler)
    return handler(gr.Request(input=input, metadata=metadata or {}))


def arun(middleware: Sequence[Any], input: Any, model: Model | None = None,
         metadata: dict[str, Any] | None = None) -> gr.Response:
    """The async twin of ``run``: uses each middleware's ``acall``."""
    endpoint = model or Model()

    async def last(request: gr.Request) -> gr.Response:
        return endpoint(request)

    handler: Any = last
    for link in reversed(middleware):
        handler = (lambda m, nxt: lambda request: m.acall(request, nxt))(link, handler)
    return asyncio.run(handler(gr.Request(input=input, metadata=metadata or {})))


def check(name: str, settings: dict[str, Any] | None = None) -> Any:
    """The single update check the installed plugin ``name`` builds from ``settings``."""
    (only,) = build(name, settings).checks
    return only


def review_context(candidate: dict[str, Any], *, parent: dict[str, Any] | None = None,
                   ledger: gr.Ledger | None = None, blob_store: gr.BlobStore | None = None,
                   proposal: gr.UpdateProposal | None = None) -> gr.ReviewContext:
    """A ReviewContext for ``candidate``; the ledger gets ``parent`` as its genesis anchor."""
    parent = parent if parent is not None else {"seed": 0}
    if ledger is None:
        ledger = gr.MemoryLedger()
        ledger.put_state(parent)
        ledger.promote(gr.Decision.accept(candidate=gr.state_version(parent), kind="genesis",
                                          source="operator", anchor=True), None)
    if proposal is None:
        proposal = gr.UpdateProposal(parent=gr.state_version(parent),
                                     patch=[{"op": "add", "path": "/x", "value": 1}])
    return gr.ReviewContext(proposal, parent, candidate, gr.state_version(candidate), ledger,
                            blob_store)


def failed(findings: Any) -> list[gr.Finding]:
    """The failed findings among ``findings``."""
    return [f for f in findings if not f.passed]
