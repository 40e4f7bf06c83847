"""Canary calls on a Ray cluster: the same contract as the Dask backend, on Ray's scheduler.

Each side's state (JSON) is put in Ray's object store once per review; a
task is ``answer_on_worker`` (the Dask backend's worker function), which
builds the client with ``build(state, blobs)`` from the shared blob store,
keeps it for later reviews, checks that it reports the state it was built
from, and returns outputs only, as JSON text. Checkers and expectations never
leave the reviewing process. Results come back per call, so the runner keys
them by case as on any backend and the decision equals the local one for the
same seed.

Tasks are never retried by Ray (``max_retries=0``): a worker that dies fails
the calls of its task, which count as failed cases for their side, so a
review on a failing cluster is never accepted and each outcome names the
error (``WorkerCrashedError``, ``NodeDiedError``...). A call that times out
ends the worker process running its task (Ray's gentle cancel cannot
interrupt a call blocked in native code); whatever is outstanding when the
run ends (the rule stopped, a safety case failed) is cancelled: queued tasks
never run, a running one finishes unheard, as on Dask.

The cluster is trusted infrastructure (Ray moves values with pickle), as for
Dask. ``ray`` is imported when a review starts, never by ``import guardrails``.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import Field

from .._errors import ConfigError
from ._backends import Caller, ClusterSettings, _ClusterRun, answer_on_worker


class RaySettings(ClusterSettings):
    """``[canaries.ray]``: evaluate canary cases on a Ray cluster. Part of the fingerprint."""

    address: str = Field(min_length=1)
    """The cluster: ``HOST:PORT`` of its GCS (``ray start --head`` prints it), ``ray://HOST:PORT``
    for Ray Client, or ``auto`` (the cluster this host belongs to)."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"the Ray backend needs ray ({exc}); install it with: "
                          "pip install 'guardrails-middleware[ray]'") from None
    return ray


def _check_reachable(address: str, timeout: float) -> None:
    """A TCP connect to ``address`` first: Ray itself retries an absent cluster for minutes."""
    if address == "auto":
        return
    parts = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"the Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or "
                          "auto; check [canaries.ray] address")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"the Ray cluster at {address} could not be reached ({exc}); check "
                          "[canaries.ray] address and that the cluster is up") from None


class RayBackend:
    """Calls on a Ray cluster (see the module docstring for what travels where).

    If this process is already connected (``ray.is_initialized()``), that connection is
    used and kept; else the backend connects to ``settings.address`` for the run and
    disconnects after it.
    """

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings

    def _connect(self) -> tuple[Any, bool]:
        ray = _ray()
        if ray.is_initialized():
            return ray, False
        _check_reachable(self.settings.address, self.settings.connect_timeout)
        try:
            ray.init(address=self.settings.address, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"the Ray cluster at {self.settings.address} could not be "
                              f"joined ({exc}); check [canaries.ray] address") from None
        return ray, True

    @contextlib.contextmanager
    def sides(self, candidate: Any, incumbent: Any) -> Iterator[tuple[Caller, Caller]]:
        ray, owned = self._connect()
        run = _RayRun(ray, self.settings)
        try:
            yield run.caller(candidate), run.caller(incumbent)
        finally:
            run.cancel_outstanding()
            if owned:
                ray.shutdown()


class _RayTask:
    """One submitted task: its object reference and a future on its result."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self.future = ref.future()


_REMOTE: dict[int, Any] = {}
"""``answer_on_worker`` as a Ray remote function, made once per ``ray`` module."""


class _RayRun(_ClusterRun):
    """Tasks as Ray object references; each side's state put in the object store once."""

    def __init__(self, ray: Any, settings: RaySettings) -> None:
        super().__init__(settings)
        self.ray = ray
        key = id(ray)
        if key not in _REMOTE:
            _REMOTE[key] = ray.remote(max_retries=0, num_cpus=1)(answer_on_worker)
        self.remote = _REMOTE[key]
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def ship(self, state: dict[str, Any]) -> Any:
        return self.ray.put(state)

    def submit(self, version: str, shipped: Any, requests: str) -> Any:
        # A reference passed as an argument arrives on the worker as its value.
        return _RayTask(self.remote.remote(self.settings.build, self.settings.blobs,
                                           self.settings.blob_options, version, shipped,
                                           requests))

    def when_done(self, task: Any, callback: Callable[[], None]) -> None:
        task.future.add_done_callback(lambda _: callback())

    def outcome(self, task: Any) -> list[Any]:
        try:
            return list(task.future.result())
        except self.ray.exceptions.RayTaskError as exc:
            # Ray wraps what the task raised; the evidence names the error itself, as on the
            # other backends (a client that cannot be built: ValueError, BlobIntegrityError).
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def cancel(self, tasks: list[Any], force: bool = False) -> None:
        for task in tasks:
            # Already finished, or the cluster is gone: nothing left to stop.
            with contextlib.suppress(Exception):
                self.ray.cancel(task.ref, force=force)

    def stop_hung(self, task: Any) -> None:
        # Ray's gentle cancel cannot interrupt a call blocked in C (a sleep, a lock, a native
        # loop): the worker process running a hung call is ended, and Ray starts another.
        self.cancel([task], force=True)
