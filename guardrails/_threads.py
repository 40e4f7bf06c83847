"""Daemon threads for untrusted calls: the one place the core starts a thread to wait on.

A candidate may hang forever; a daemon thread it blocks is abandoned and can
never keep the interpreter alive. Threads get no telling name: the candidate
runs inside them and must not learn that it is being evaluated. Imports only
the standard library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class CallTimeout(Exception):
    """A call did not finish within its time limit."""


def _start_daemon(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


def call_with_timeout(fn: Callable[[], T], timeout: float | None) -> T:
    """Run ``fn`` in a daemon thread and wait at most ``timeout`` seconds (``None``: no limit).

    Raises ``CallTimeout`` when the time is up (the thread is abandoned: only
    the process sandbox can truly stop a runaway candidate) and re-raises
    whatever ``fn`` raised.
    """
    future = _start_daemon(fn)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise CallTimeout(f"no answer within {timeout:g} s") from None


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    return call_with_timeout(lambda: asyncio.run(coroutine), None)


class DaemonExecutor(concurrent.futures.Executor):
    """An executor for ``loop.run_in_executor`` that runs each call in its own daemon thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[T]:
        return _start_daemon(lambda: fn(*args, **kwargs))
