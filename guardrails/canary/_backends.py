"""Where the runner's calls run: this process (default) or a cluster (Dask here, Ray in ``_ray``).

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
stopped, a safety case failed) is cancelled too. What is common to every
cluster (grouping calls into tasks, timeouts, settling answers, cancelling)
is ``_ClusterRun``; a cluster backend says only how it ships, submits,
watches and cancels.

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


class ClusterSettings(BaseModel):
    """What every cluster backend needs: how workers build a side and reach the blobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    build: str
    """``"package.module:callable"`` importable on every worker: ``build(state, blobs)`` returns
    the client serving ``state``, ``blobs`` being the shared blob store."""
    blobs: str = Field(min_length=1)
    """The blob store URL the workers open (the guard's own shared store: ``[blobs] url``)."""
    blob_options: dict[str, Any] = {}
    """Keyword arguments for the store (``endpoint``, ``schema``, ...)."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds to reach the cluster."""
    chunk: int = Field(default=8, ge=1, le=1024)
    """Calls of one side grouped into one task, at most (a task costs the scheduler about a
    millisecond or more; see benchmarks/distributed_review.py)."""

    @field_validator("build")
    @classmethod
    def _build_form(cls, value: str) -> str:
        return _importable(value)


class DaskSettings(ClusterSettings):
    """``[canaries.dask]``: evaluate canary cases on a Dask cluster. Part of the fingerprint."""

    scheduler: str = Field(min_length=1)
    """The scheduler's address, e.g. ``tcp://10.0.0.5:8786``."""


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


class _ClusterRun:
    """One canary run's tasks on a cluster (Dask or Ray): every task it submitted, to cancel.

    Calls of one side are grouped into tasks of at most ``settings.chunk`` calls: a task
    costs the scheduler (and the reviewing process, which holds the client) about a
    millisecond or more, a call of a local model may cost less. A full task is submitted at
    once; a partial one only while the cluster has fewer than two tasks per worker slot to
    work on, so calls trickling in as answers come back do not become one tiny task each.
    Each call still has its own result and its own timeout; a call that times out stops its
    task, failing the calls grouped with it (fail closed). A subclass says how a state is
    shipped and a task submitted, watched, read and cancelled, and how many slots it has.
    """

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.outstanding: set[Any] = set()
        self._lock = threading.Lock()
        self.slots = 1
        """Tasks the cluster runs at once (its worker threads); set by a subclass."""
        self.running = 0
        """Tasks submitted and not yet settled (on the run's loop)."""
        self._sides: list[_SideQueue] = []

    # -- what a cluster provides ----------------------------------------------------------

    def ship(self, state: dict[str, Any]) -> Any:
        """Put ``state`` on the cluster once; what tasks refer to it by."""
        raise NotImplementedError

    def submit(self, version: str, shipped: Any, requests: str) -> Any:
        """Start ``answer_on_worker`` for ``requests`` (a JSON array); a handle on the task."""
        raise NotImplementedError

    def when_done(self, task: Any, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from any thread) once ``task`` has ended, however it ended."""
        raise NotImplementedError

    def outcome(self, task: Any) -> list[Any]:
        """The answers of an ended task; raises what made it fail."""
        raise NotImplementedError

    def cancel(self, tasks: list[Any]) -> None:
        """Drop ``tasks``: those queued never run; a running one may finish unheard."""
        raise NotImplementedError

    def stop_hung(self, task: Any) -> None:
        """Stop a task one of whose calls timed out (by default: ``cancel`` it)."""
        self.cancel([task])

    # -- the same on every cluster ---------------------------------------------------------

    def caller(self, side: Any) -> Caller:
        # The state is read here, at home, with a time limit: the worker builds from exactly it.
        state = call_with_timeout(side.snapshot, self.settings.connect_timeout)
        queue = _SideQueue(self, state_version(state), self.ship(state))
        self._sides.append(queue)
        return queue.call

    def busy(self) -> bool:
        """Whether the cluster has enough to do without a partial task."""
        return self.running >= 2 * self.slots

    def launch(self, queue: _SideQueue, chunk: list[tuple[str, asyncio.Future[Any]]]) -> Any:
        """Submit one task for ``chunk`` (on the run's loop); the task."""
        # One JSON text per task: the cluster's client would otherwise walk every value of
        # every request (a model's input may be thousands of numbers).
        task = self.submit(queue.version, queue.shipped, "[" + ",".join(r for r, _ in chunk) + "]")
        with self._lock:
            self.outstanding.add(task)
        self.running += 1
        loop = asyncio.get_running_loop()
        self.when_done(task, functools.partial(self._wake, loop, chunk, task))
        return task

    def _wake(self, loop: asyncio.AbstractEventLoop,
              chunk: list[tuple[str, asyncio.Future[Any]]], task: Any) -> None:
        """Called in the cluster client's thread when a task ends: its answers are fetched
        here, off the run's loop (fetching a result from a worker is a round trip the loop
        must not wait for: it is busy submitting the next tasks), then settled on the loop."""
        try:
            answers: list[Any] = [json.loads(a) if isinstance(a, str) else a
                                  for a in self.outcome(task)]
        except Exception as exc:  # the task failed (a dead worker too): every call in it fails
            answers = [exc] * len(chunk)
        except BaseException:  # cancelled (a timeout of a call grouped with these)
            answers = [RuntimeError("the task was cancelled on the cluster")] * len(chunk)
        with contextlib.suppress(RuntimeError):  # the run ended and its loop closed
            loop.call_soon_threadsafe(self._settle, task, chunk, answers)

    def _settle(self, task: Any, chunk: list[tuple[str, asyncio.Future[Any]]],
                answers: list[Any]) -> None:
        """Hand each call of a finished task its own output or exception (on the run's loop),
        then send what the sides held back while the cluster was busy."""
        with self._lock:
            self.outstanding.discard(task)
        self.running -= 1
        for queue in self._sides:
            queue.flush()
        if len(answers) != len(chunk):  # a worker that answers another number of calls
            answers = [RuntimeError(f"the task answered {len(answers)} of {len(chunk)} "
                                    "calls")] * len(chunk)
        for (_, result), answer in zip(chunk, answers, strict=True):
            if result.done():
                continue
            if isinstance(answer, BaseException):
                result.set_exception(answer)
            else:
                result.set_result(answer)

    def cancel_outstanding(self) -> None:
        with self._lock:
            pending, self.outstanding = list(self.outstanding), set()
        if pending:
            self.cancel(pending)


class _SideQueue:
    """One side's calls on the way to the cluster: held until a task's worth, then sent."""

    def __init__(self, run: _ClusterRun, version: str, shipped: Any) -> None:
        self.run = run
        self.version = version
        self.shipped = shipped
        self.waiting: list[tuple[str, asyncio.Future[Any]]] = []
        self.tasks: dict[asyncio.Future[Any], Any] = {}
        self.timer: asyncio.TimerHandle | None = None

    def flush(self, *, partial: bool = True) -> None:
        """Send full tasks, and a partial one too if ``partial`` and the cluster is not busy."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # A call that timed out before it was sent is dropped, never run.
        self.waiting = [(r, f) for r, f in self.waiting if not f.done()]
        size = self.run.settings.chunk
        while self.waiting and (len(self.waiting) >= size or (partial and not self.run.busy())):
            chunk, self.waiting = self.waiting[:size], self.waiting[size:]
            task = self.run.launch(self, chunk)
            for _, result in chunk:
                self.tasks[result] = task

    async def call(self, request: Request, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()
        self.waiting.append((request.model_dump_json(), result))
        if len(self.waiting) >= self.run.settings.chunk:
            self.flush(partial=False)  # a full task goes at once
        elif self.timer is None:
            # Gather what arrives in the next moments (the rest of a batch arrives over
            # several turns of the loop) before a partial task may go.
            self.timer = loop.call_later(0.002, self.flush)
        try:
            return await asyncio.wait_for(asyncio.shield(result), timeout)
        except TimeoutError:
            if result in self.tasks:
                self.run.stop_hung(self.tasks[result])
            raise CallTimeout(f"no answer within {timeout:g} s") from None
        finally:
            self.tasks.pop(result, None)
            # Nobody waits for it any more: an answer arriving later must not leave an
            # unretrieved exception for the garbage collector to log from a finalizer.
            result.cancel()


class _DaskRun(_ClusterRun):
    """Tasks as Dask futures; each side's state scattered to every worker."""

    def __init__(self, client: Any, settings: DaskSettings) -> None:
        super().__init__(settings)
        self.client = client
        workers = client.scheduler_info().get("workers", {})
        self.slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    def ship(self, state: dict[str, Any]) -> Any:
        # A list: scattering a dict itself would scatter each of its values. Broadcast: a task
        # goes where its data is, so a state held by one worker would draw every task there.
        [shipped] = self.client.scatter([state], hash=False, broadcast=True)
        with self._lock:
            self.outstanding.add(shipped)  # released with the run's tasks
        return shipped

    def submit(self, version: str, shipped: Any, requests: str) -> Any:
        return self.client.submit(answer_on_worker, self.settings.build, self.settings.blobs,
                                  self.settings.blob_options, version, shipped, requests,
                                  pure=False)

    def when_done(self, task: Any, callback: Callable[[], None]) -> None:
        task.add_done_callback(lambda _: callback())

    def outcome(self, task: Any) -> list[Any]:
        return list(task.result())

    def cancel(self, tasks: list[Any]) -> None:
        self.client.cancel(tasks)


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
                     state: dict[str, Any], requests: str) -> list[Any]:
    """Runs on a Dask or Ray worker: for each request of ``requests`` (a JSON array), the
    output of the client serving ``state`` as
    canonical JSON text (an output that is not JSON fails its call), or the exception its
    call raised. A client that cannot be built fails the whole task."""
    client = _built(build, blobs, options, version, state)
    answers: list[Any] = []
    for request in json.loads(requests):
        try:
            output = whole_answerer(client)(Request.model_validate(request))
            answers.append(canonical_json(output).decode("utf-8"))
        except Exception as exc:
            answers.append(exc)
    return answers
