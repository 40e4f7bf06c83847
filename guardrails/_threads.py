"""Daemon threads for untrusted calls: the one place the core starts a thread to wait on.

A candidate may hang forever; a daemon thread it blocks is abandoned and can
never keep the interpreter alive. Threads get no telling name: the candidate
runs inside them and must not learn that it is being evaluated. Imports only
the standard library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
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
    box: list[T] = []

    async def main() -> None:
        # The result is handed over outside the task: on the main thread Python 3.11's
        # asyncio.run formats a repr of its SIGINT handler, which holds the task, and with it
        # the task's result (a review's whole evidence: tens of ms; issue 22).
        box.append(await coroutine)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main())
    else:
        call_with_timeout(lambda: asyncio.run(main()), None)
    return box[0]


class DaemonExecutor(concurrent.futures.Executor):
    """An executor for ``loop.run_in_executor``: each call runs in a daemon thread of its own
    while it runs, so a call that never returns holds only its thread, which is abandoned.

    A thread whose call returned waits ``idle`` seconds for the next call before it ends:
    starting a thread per call cost more than a fast local model's answer (issue 22), and
    a blocked thread is never handed another call.
    """

    def __init__(self, idle: float = 2.0) -> None:
        self._idle_seconds = idle
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
            threading.Thread(target=worker.run, daemon=True).start()
        worker.jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def run_in_loop(self, loop: asyncio.AbstractEventLoop, fn: Callable[[T], Any], arg: T
                    ) -> asyncio.Future[Any]:
        """``fn(arg)`` in a daemon thread, as a future of ``loop`` (``loop.run_in_executor``
        without the ``concurrent.futures`` future in between: the runner makes one such call
        per canary call, and the extra future, its lock and its chaining were a third of the
        event loop's work per call; issue 22). Cancelling the future abandons the call."""
        future: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():  # cancelled (timed out) in the meantime
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def job() -> None:
            try:
                value, ok = fn(arg), True
            except BaseException as exc:  # the loop thread re-raises it
                value, ok = exc, False
            # A closed loop raises RuntimeError: nobody waits for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, ok, value)

        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(self)
            threading.Thread(target=worker.run, daemon=True).start()
        worker.jobs.put((None, job))
        return future

    def _rest(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def _retire(self, worker: _Worker) -> bool:
        """True when ``worker`` may end: it is idle and nobody has just picked it."""
        with self._lock:
            if worker in self._idle:
                self._idle.remove(worker)
                return True
            return False


class _Worker:
    """One daemon thread's loop: run a call, offer itself for the next, end when left idle."""

    def __init__(self, owner: DaemonExecutor) -> None:
        self.owner = owner
        self.jobs: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any] | None, Callable[[], Any]]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            future, fn = self.jobs.get()
            if future is None:
                fn()  # settles its own future (run_in_loop) and never raises
            elif future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
            del future, fn  # hold no result while idle
            self.owner._rest(self)
            try:
                self.jobs.put(self.jobs.get(timeout=self.owner._idle_seconds))
            except queue.Empty:
                if self.owner._retire(self):
                    return
