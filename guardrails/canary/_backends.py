"""Where the runner's calls run: this process (default) or a Dask cluster.

A backend turns (candidate, incumbent) into two callers, ``await
caller(request, timeout)`` giving the side's output. Everything else (the
seeded order, pairing, retries, the sequential rule, judging) stays in the
runner, in the reviewing process, so a decision depends on the outputs only,
never on where they were computed: the same seed gives the same verdict,
cases used and statistic on any backend that returns the same outputs.

*The Dask backend* ships states, not clients: each side's state (JSON) is
scattered to the cluster once per review, and a worker builds the client
with ``build(state, blobs)``, where ``build`` is an importable
``"module:callable"`` and ``blobs`` the shared blob store opened from its
URL, so weights travel from the store to the worker, never through the
scheduler. A worker keeps the clients it built (by state version) for later
reviews, and checks that a client it built reports the state it was built
from. Workers return outputs only, as JSON text; checkers and expectations
never leave the reviewing process. A call that times out is cancelled on the
cluster, and whatever is still outstanding when the run ends (the rule
stopped, a safety case failed) is cancelled too.

The cluster is trusted infrastructure: Dask moves results with pickle, so a
worker process the candidate could take over could also send the reviewing
process arbitrary objects. For untrusted candidates use the process sandbox
on one host (``[sandbox] mode = "process"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._canonical import canonical_json, state_version
from .._client import answer_whole, answers_by_stream, whole_answerer
from .._errors import ConfigError
from .._messages import Request
from .._threads import CallTimeout, DaemonExecutor, call_with_timeout

Caller = Callable[[Request, float], Awaitable[Any]]
"""One side as the runner calls it: ``await caller(request, timeout)`` is the output; raises
``CallTimeout`` when the time is up, or whatever the client raised."""

_EXECUTOR = DaemonExecutor()


class EvaluationBackend(Protocol):
    """Where candidate and incumbent calls run; ``sides`` is entered once per canary run."""

    def sides(self, candidate: Any, incumbent: Any
              ) -> contextlib.AbstractContextManager[tuple[Caller, Caller]]: ...


class LocalBackend:
    """Calls in this process: the sync ``invoke``, each call in its own daemon thread.

    A stream-only client (no ``invoke``) answers with its stream consumed whole
    (``answer_whole``) in that thread, under the same timeout.

    Always the sync invoke: an untrusted candidate's async method could block
    the event loop and with it every timeout; a thread it blocks is simply
    abandoned.
    """

    @contextlib.contextmanager
    def sides(self, candidate: Any, incumbent: Any) -> Iterator[tuple[Caller, Caller]]:
        yield _local(candidate), _local(incumbent)


def _local(client: Any) -> Caller:
    # A stream-only client answers with its stream consumed whole, under the same timeout;
    # the consumer also stops at the deadline and closes the stream, so an endless stream
    # does not keep its thread reading.
    invoke = None if answers_by_stream(client) else client.invoke

    async def call(request: Request, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        answer = invoke if invoke is not None else functools.partial(
            answer_whole, client, deadline=time.monotonic() + timeout)
        pending = _EXECUTOR.run_in_loop(loop, answer, request)
        # A timer that cancels the pending answer, rather than asyncio.wait_for, whose waiter
        # future and callbacks cost as much again per call (issue 22).
        expired: list[bool] = []

        def expire() -> None:
            if not pending.done():
                expired.append(True)
                pending.cancel()

        timer = loop.call_later(timeout, expire)
        try:
            return await pending
        except asyncio.CancelledError:
            if expired:
                raise CallTimeout(f"no answer within {timeout:g} s") from None
            raise
        finally:
            timer.cancel()

    return call


def _importable(value: str) -> str:
    module, _, attr = value.partition(":")
    if not module or not attr:
        raise ValueError(f"{value!r} is not 'package.module:callable'")
    return value


class DaskSettings(BaseModel):
    """``[canaries.dask]``: evaluate canary cases on a Dask cluster. Part of the fingerprint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheduler: str = Field(min_length=1)
    """The scheduler's address, e.g. ``tcp://10.0.0.5:8786``."""
    build: str
    """``"package.module:callable"`` importable on every worker: ``build(state, blobs)`` returns
    the client serving ``state``, ``blobs`` being the shared blob store."""
    blobs: str = Field(min_length=1)
    """The blob store URL the workers open (the guard's own shared store: ``[blobs] url``)."""
    blob_options: dict[str, Any] = {}
    """Keyword arguments for the store (``endpoint``, ``schema``, ...)."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to reach the scheduler."""
    chunk: int = Field(default=8, ge=1, le=1024)
    """Calls of one side grouped into one task, at most (a task costs the scheduler about a
    millisecond or more; see benchmarks/distributed_review.py)."""

    @field_validator("build")
    @classmethod
    def _build_form(cls, value: str) -> str:
        return _importable(value)


class DaskBackend:
    """Calls on a Dask cluster (see the module docstring for what travels where).

    ``client``: an existing ``distributed.Client`` (kept open), else one is
    connected to ``settings.scheduler`` per run and closed after it.
    """

    def __init__(self, settings: DaskSettings, client: Any = None) -> None:
        self.settings = settings
        self._client = client

    def _connect(self) -> tuple[Any, bool]:
        if self._client is not None:
            return self._client, False
        try:
            import distributed
        except ImportError as exc:
            raise ConfigError(f"the Dask backend needs distributed ({exc}); install it with: "
                              "pip install 'guardrails-middleware[dask]'") from None
        try:
            client = distributed.Client(  # type: ignore[no-untyped-call]
                self.settings.scheduler, set_as_default=False,
                timeout=self.settings.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"the Dask scheduler {self.settings.scheduler} could not be "
                              f"reached ({exc}); check [canaries.dask] scheduler and that the "
                              "cluster is up") from None
        return client, True

    @contextlib.contextmanager
    def sides(self, candidate: Any, incumbent: Any) -> Iterator[tuple[Caller, Caller]]:
        client, owned = self._connect()
        run = _DaskRun(client, self.settings)
        try:
            yield run.caller(candidate), run.caller(incumbent)
        finally:
            run.cancel_outstanding()
            if owned:
                client.close()


class _DaskRun:
    """One canary run's tasks on the cluster: every future it submitted, to cancel at the end.

    Calls that arrive together (one batch of the runner) are grouped into tasks of at most
    ``settings.chunk`` calls of one side: a task costs the scheduler milliseconds, a call of
    a local model may cost less. Each call still has its own result and its own timeout; a
    call that times out cancels its task, failing the calls grouped with it (fail closed).
    """

    def __init__(self, client: Any, settings: DaskSettings) -> None:
        self.client = client
        self.settings = settings
        self.outstanding: set[Any] = set()
        self._lock = threading.Lock()

    def caller(self, side: Any) -> Caller:
        # The state is read here, at home, with a time limit: the worker builds from exactly it.
        state = call_with_timeout(side.snapshot, self.settings.connect_timeout)
        version = state_version(state)
        # A list: scattering a dict itself would scatter each of its values. Broadcast: a task
        # goes where its data is, so a state held by one worker would draw every task there.
        [shipped] = self.client.scatter([state], hash=False, broadcast=True)
        self.outstanding.add(shipped)
        waiting: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        tasks: dict[asyncio.Future[Any], Any] = {}

        def flush() -> None:
            batch, waiting[:] = list(waiting), []
            loop = asyncio.get_running_loop()
            for start in range(0, len(batch), self.settings.chunk):
                chunk = batch[start:start + self.settings.chunk]
                future = self.client.submit(
                    answer_on_worker, self.settings.build, self.settings.blobs,
                    self.settings.blob_options, version, shipped, [r for r, _ in chunk],
                    pure=False)
                with self._lock:
                    self.outstanding.add(future)
                for _, result in chunk:
                    tasks[result] = future
                future.add_done_callback(functools.partial(self._wake, loop, chunk))

        async def call(request: Request, timeout: float) -> Any:
            loop = asyncio.get_running_loop()
            result: asyncio.Future[Any] = loop.create_future()
            if not waiting:
                # Gather what this batch submits in the next moments into a few tasks.
                loop.call_later(0.002, flush)
            waiting.append((request.model_dump(mode="json"), result))
            try:
                return await asyncio.wait_for(asyncio.shield(result), timeout)
            except TimeoutError:
                if result in tasks:
                    tasks[result].cancel()
                raise CallTimeout(f"no answer within {timeout:g} s") from None
            finally:
                tasks.pop(result, None)
                # Nobody waits for it any more: an answer arriving later must not leave an
                # unretrieved exception for the garbage collector to log from a finalizer.
                result.cancel()

        return call

    def _wake(self, loop: asyncio.AbstractEventLoop,
              chunk: list[tuple[dict[str, Any], asyncio.Future[Any]]], done: Any) -> None:
        """Called in the Dask client's thread when a task ends: settle on the run's loop."""
        with contextlib.suppress(RuntimeError):  # the run ended and its loop closed
            loop.call_soon_threadsafe(self._settle, done, chunk)

    def _settle(self, done: Any, chunk: list[tuple[dict[str, Any], asyncio.Future[Any]]]) -> None:
        """Hand each call of a finished task its own output or exception (on the run's loop)."""
        with self._lock:
            self.outstanding.discard(done)
        try:
            answers: list[Any] = done.result()
        except Exception as exc:  # the task failed: every call in it fails
            answers = [exc] * len(chunk)
        except BaseException:  # cancelled (a timeout of a call grouped with these)
            answers = [RuntimeError("the task was cancelled on the cluster")] * len(chunk)
        for (_, result), answer in zip(chunk, answers, strict=True):
            if result.done():
                continue
            if isinstance(answer, BaseException):
                result.set_exception(answer)
            else:
                result.set_result(json.loads(answer))

    def cancel_outstanding(self) -> None:
        with self._lock:
            pending, self.outstanding = list(self.outstanding), set()
        if pending:
            self.client.cancel(pending)


# ---------------------------------------------------------------------------------------------
# On the worker

_BUILT: dict[tuple[str, str, str], Any] = {}
_BUILT_LOCK = threading.Lock()
_KEEP = 8
"""Clients a worker keeps built (the candidate and incumbent of the last few reviews)."""


def _built(build: str, blobs: str, options: dict[str, Any], version: str,
           state: dict[str, Any]) -> Any:
    key = (build, blobs, version)
    with _BUILT_LOCK:
        if key in _BUILT:
            return _BUILT[key]
    from ..blobs import open_blob_store

    module, _, attr = build.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    client = factory(state, open_blob_store(blobs, **options))
    reported = state_version(client.snapshot())
    if reported != version:
        raise ValueError(f"the client built on the worker from state {version[:12]} reports "
                         f"state {reported[:12]}; {build} must serve exactly the state it is given")
    with _BUILT_LOCK:
        while len(_BUILT) >= _KEEP:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = client
    return client


def answer_on_worker(build: str, blobs: str, options: dict[str, Any], version: str,
                     state: dict[str, Any], requests: list[dict[str, Any]]) -> list[Any]:
    """Runs on a Dask worker: for each request, the output of the client serving ``state`` as
    canonical JSON text (an output that is not JSON fails its call), or the exception its
    call raised. A client that cannot be built fails the whole task."""
    client = _built(build, blobs, options, version, state)
    answers: list[Any] = []
    for request in requests:
        try:
            output = whole_answerer(client)(Request.model_validate(request))
            answers.append(canonical_json(output).decode("utf-8"))
        except Exception as exc:
            answers.append(exc)
    return answers
