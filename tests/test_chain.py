"""The runtime chain: middleware order, async twins and signature checks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import guardrails as gr
from guardrails.chain._chain import build_async_chain, build_chain
from guardrails.testing import DictClient

Handler = Callable[[gr.Request], gr.Response]
AsyncHandler = Callable[[gr.Request], Awaitable[gr.Response]]


def endpoint(request: gr.Request) -> gr.Response:
    return gr.Response(output=f"answer to {request.input}", version="v")


async def aendpoint(request: gr.Request) -> gr.Response:
    return endpoint(request)


def tracing(name: str, log: list[str]) -> Callable[[gr.Request, Handler], gr.Response]:
    def middleware(request: gr.Request, call_next: Handler) -> gr.Response:
        log.append(f"{name} in")
        response = call_next(request)
        log.append(f"{name} out")
        return response

    return middleware


def atracing(name: str, log: list[str]) -> Callable[[gr.Request, AsyncHandler],
                                                     Awaitable[gr.Response]]:
    async def middleware(request: gr.Request, call_next: AsyncHandler) -> gr.Response:
        log.append(f"{name} in")
        response = await call_next(request)
        log.append(f"{name} out")
        return response

    return middleware


NESTED = ["first in", "second in", "third in", "third out", "second out", "first out"]


def test_first_middleware_is_outermost() -> None:
    """The first middleware in the list runs first on the way in and last on the way out."""
    log: list[str] = []
    chain = build_chain([tracing(n, log) for n in ("first", "second", "third")], endpoint)
    assert chain(gr.Request(input="q")).output == "answer to q"
    assert log == NESTED


def test_middleware_can_rewrite_request_and_response() -> None:
    """A middleware may pass a changed request on and change the response it returns."""
    def upper(request: gr.Request, call_next: Handler) -> gr.Response:
        response = call_next(request.model_copy(update={"input": str(request.input).upper()}))
        return response.model_copy(update={"output": response.output + "!"})

    assert build_chain([upper], endpoint)(gr.Request(input="q")).output == "answer to Q!"


def test_middleware_can_short_circuit() -> None:
    """A middleware that does not call call_next stops the chain before the model."""
    reached: list[str] = []

    def blocker(request: gr.Request, call_next: Handler) -> gr.Response:
        return gr.Response(output="blocked", version="none")

    def spy(request: gr.Request) -> gr.Response:
        reached.append("endpoint")
        return endpoint(request)

    assert build_chain([blocker], spy)(gr.Request(input="q")).output == "blocked"
    assert reached == []


def test_async_chain_order() -> None:
    """In the async chain too, the first middleware is outermost."""
    log: list[str] = []
    chain = build_async_chain([atracing(n, log) for n in ("first", "second", "third")], aendpoint)
    assert asyncio.run(chain(gr.Request(input="q"))).output == "answer to q"
    assert log == NESTED


def test_sync_middleware_is_bridged_in_the_async_chain() -> None:
    """A sync middleware in the async chain runs in a worker thread, in order, and its
    call_next reaches the async links after it."""
    log: list[str] = []
    threads: list[str] = []

    def sync_mw(request: gr.Request, call_next: Handler) -> gr.Response:
        threads.append(threading.current_thread().name)
        return tracing("second", log)(request, call_next)

    chain = build_async_chain([atracing("first", log), sync_mw, atracing("third", log)],
                              aendpoint)

    async def main() -> gr.Response:
        threads.append(threading.current_thread().name)
        return await chain(gr.Request(input="q"))

    assert asyncio.run(main()).output == "answer to q"
    assert log == NESTED
    assert threads[0] != threads[1]


def test_object_with_acall_uses_each_twin() -> None:
    """An object with a sync __call__ and an async acall runs __call__ in the sync chain and
    acall in the async chain."""
    used: list[str] = []

    class Twin:
        def __call__(self, request: gr.Request, call_next: Handler) -> gr.Response:
            used.append("sync")
            return call_next(request)

        async def acall(self, request: gr.Request, call_next: AsyncHandler) -> gr.Response:
            used.append("async")
            return await call_next(request)

    build_chain([Twin()], endpoint)(gr.Request(input="q"))
    asyncio.run(build_async_chain([Twin()], aendpoint)(gr.Request(input="q")))
    assert used == ["sync", "async"]


def test_async_only_middleware_cannot_join_the_sync_chain() -> None:
    """build_chain refuses an async-only middleware with ConfigError naming it."""
    with pytest.raises(gr.ConfigError, match="middleware middleware is async-only"):
        build_chain([atracing("a", [])], endpoint)


def test_async_callable_object_is_async_only() -> None:
    """An object whose __call__ is async counts as async-only."""
    class AsyncObject:
        async def __call__(self, request: gr.Request, call_next: AsyncHandler) -> gr.Response:
            return await call_next(request)

    with pytest.raises(gr.ConfigError, match="AsyncObject is async-only"):
        build_chain([AsyncObject()], endpoint)
    assert asyncio.run(build_async_chain([AsyncObject()], aendpoint)(
        gr.Request(input="q"))).output == "answer to q"


# -- through the guard -------------------------------------------------------------------


def test_guard_runs_middleware_in_order(make_guard: Any, client: DictClient) -> None:
    """GuardedClient.invoke passes the guard's middleware, first outermost."""
    log: list[str] = []
    guarded = make_guard(middleware=[tracing(n, log) for n in ("first", "second", "third")]
                         ).wrap(client)
    assert guarded.invoke("2+2").output == "4"
    assert log == NESTED


def test_guard_runs_async_middleware_in_order(make_guard: Any, client: DictClient) -> None:
    """GuardedClient.ainvoke passes async and bridged sync middleware, first outermost."""
    log: list[str] = []
    middleware = [atracing("first", log), tracing("second", log), atracing("third", log)]
    guarded = make_guard(middleware=middleware).wrap(client)
    assert asyncio.run(guarded.ainvoke("2+2")).output == "4"
    assert log == NESTED


def test_guard_with_async_only_middleware_serves_ainvoke(
    make_guard: Any, client: DictClient
) -> None:
    """A guard with an async-only middleware can be wrapped and serves ainvoke; invoke raises
    ConfigError saying to call ainvoke."""
    log: list[str] = []
    guarded = make_guard(middleware=[atracing("only", log)]).wrap(client)
    assert asyncio.run(guarded.ainvoke("2+2")).output == "4"
    assert log == ["only in", "only out"]
    with pytest.raises(gr.ConfigError, match="ainvoke"):
        guarded.invoke("2+2")


def test_chain_is_built_once(
    make_guard: Any, client: DictClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls reuse the chain built at wrap time; nothing rebuilds it per call."""
    guarded = make_guard(middleware=[tracing("m", [])]).wrap(client)
    rebuilt: list[str] = []
    monkeypatch.setattr("guardrails.guard._guarded.build_chain", lambda *a: rebuilt.append("sync"))
    monkeypatch.setattr("guardrails.guard._guarded.build_async_chain", lambda *a: rebuilt.append("async"))
    guarded.invoke("2+2")
    asyncio.run(guarded.ainvoke("2+2"))
    assert rebuilt == []


def test_middleware_errors_propagate(make_guard: Any, client: DictClient) -> None:
    """A GuardrailViolation raised by a middleware reaches the caller, and the model is not
    called."""
    def deny(request: gr.Request, call_next: Handler) -> gr.Response:
        raise gr.GuardrailViolation("denied", policy="deny")

    guarded = make_guard(middleware=[deny]).wrap(client)
    with pytest.raises(gr.GuardrailViolation, match="denied") as info:
        guarded.invoke("2+2")
    assert info.value.policy == "deny"
    assert client.calls == []


@pytest.mark.parametrize(
    "bad",
    [
        lambda request: request,
        lambda request, call_next, extra: request,
        lambda: None,
    ],
)
def test_bad_middleware_signature_is_a_config_error(make_guard: Any, bad: Any) -> None:
    """A middleware that cannot take (request, call_next) is refused at construction, naming
    its position and the expected parameters."""
    with pytest.raises(gr.ConfigError, match=r"middleware #1 .*\(request, call_next\)"):
        make_guard(middleware=[tracing("ok", []), bad])


def test_non_callable_middleware_is_a_config_error(make_guard: Any) -> None:
    """A middleware that is not callable is refused at construction."""
    with pytest.raises(gr.ConfigError, match=r"middleware #0 .* is not callable"):
        make_guard(middleware=["not a function"])


def test_middleware_with_defaults_is_accepted(make_guard: Any, client: DictClient) -> None:
    """A middleware with extra defaulted or keyword-only parameters is accepted."""
    def flexible(request: gr.Request, call_next: Handler, *, note: str = "") -> gr.Response:
        return call_next(request)

    assert make_guard(middleware=[flexible]).wrap(client).invoke("2+2").output == "4"
