"""The runtime chain: middlewares around the model call, built once.

A middleware is a callable ``(request, call_next) -> Response``; an async
middleware is ``async (request, call_next) -> Response``. An object may
offer both: ``__call__`` for the sync chain and ``async acall`` for the
async one. The first middleware in the list is the outermost.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from .._errors import ConfigError
from .._messages import Request, Response

Handler = Callable[[Request], Response]
AsyncHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class Middleware(Protocol):
    """One link of the runtime chain. Stateless: per-call state rides on the request."""

    def __call__(self, request: Request, call_next: Handler) -> Response: ...


class AsyncMiddleware(Protocol):
    """The async twin of ``Middleware``."""

    async def __call__(self, request: Request, call_next: AsyncHandler) -> Response: ...


def _name(middleware: Any) -> str:
    return str(getattr(middleware, "__name__", type(middleware).__name__))


def is_async_only(middleware: Any) -> bool:
    if inspect.iscoroutinefunction(middleware):
        return True
    return inspect.iscoroutinefunction(type(middleware).__call__)


def validate_middlewares(middlewares: Sequence[Any]) -> tuple[Any, ...]:
    """Check each middleware takes ``(request, call_next)``; raise ``ConfigError`` if not."""
    for position, middleware in enumerate(middlewares):
        if not callable(middleware):
            raise ConfigError(
                f"middleware #{position} ({middleware!r}) is not callable; a middleware is "
                "a function (request, call_next) -> Response")
        try:
            inspect.signature(middleware).bind(None, None)
        except TypeError:
            raise ConfigError(
                f"middleware #{position} ({_name(middleware)}) does not accept "
                "(request, call_next); give it exactly those two parameters") from None
        except ValueError:
            pass  # builtins without a signature: trust them
    return tuple(middlewares)


def build_chain(middlewares: Sequence[Any], endpoint: Handler) -> Handler:
    """Compose the sync chain once; raises ``ConfigError`` for an async-only middleware."""
    handler = endpoint
    for middleware in reversed(middlewares):
        if is_async_only(middleware):
            raise ConfigError(
                f"middleware {_name(middleware)} is async-only; call ainvoke(), or give it a "
                "sync __call__ and an async acall")
        handler = _link(middleware, handler)
    return handler


def _link(middleware: Middleware, call_next: Handler) -> Handler:
    def link(request: Request) -> Response:
        return middleware(request, call_next)

    return link


def build_async_chain(middlewares: Sequence[Any], endpoint: AsyncHandler) -> AsyncHandler:
    """Compose the async chain once.

    Uses ``acall`` or an async ``__call__`` where a middleware has one; a
    sync-only middleware runs in a worker thread and reaches the rest of the
    chain back on the event loop.
    """
    handler = endpoint
    for middleware in reversed(middlewares):
        acall = getattr(middleware, "acall", None)
        if acall is not None:
            handler = _async_link(acall, handler)
        elif is_async_only(middleware):
            handler = _async_link(middleware, handler)
        else:
            handler = _bridged_link(middleware, handler)
    return handler


def _async_link(middleware: Any, call_next: AsyncHandler) -> AsyncHandler:
    # A plain function handing back the middleware's own coroutine: one coroutine frame
    # per link instead of two, which 1,000 concurrent calls pay on every resumption.
    def link(request: Request) -> Coroutine[Any, Any, Response]:
        coroutine: Coroutine[Any, Any, Response] = middleware(request, call_next)
        return coroutine

    return link


def _bridged_link(middleware: Middleware, call_next: AsyncHandler) -> AsyncHandler:
    async def link(request: Request) -> Response:
        loop = asyncio.get_running_loop()

        def sync_next(inner: Request) -> Response:
            return asyncio.run_coroutine_threadsafe(call_next(inner), loop).result()

        return await asyncio.to_thread(middleware, request, sync_next)

    return link
