"""A process sandbox for untrusted candidates: a proxy client backed by jailed child processes.

``ProcessSandbox(limits).start(client, state)`` forks fresh children
(``workers`` of them, one by default) from a warm template process (see
``_warm``), jails each (see ``_jail``: namespaces, a private ``/proc``, a
process cap, a clean environment, Landlock, seccomp), hands each the
pickled serving client and the candidate state, and builds the candidate
there with ``client.with_state(state)``. The returned ``SandboxedClient``
forwards ``invoke`` and ``snapshot`` over pipes, so the canary runner and
the guard's "snapshot equals the evaluated state" check use it exactly
like an in-process client.

What a caller may rely on:

- A child gets the client, the candidate state and the requests, nothing
  else: no ledger, no expectations, no file descriptors of the parent, no
  environment variable the policy does not name, a private scratch
  directory as its working directory. Under ``isolation="strict"`` (the
  default) every layer of the jail is in force or the candidate is not
  evaluated (``SandboxUnavailable`` names the layer); ``isolation`` on the
  proxy says which layers were.
- A child returns outputs only, as plain values (``None``, ``bool``,
  ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``,
  ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``). The parent decodes
  them with an unpickler that refuses every other global, so nothing a child
  sends can run code in the parent. Judging stays in the parent.
- Every failure is a typed ``SandboxError``: ``SandboxLimitExceeded`` names
  the limit (``memory``, ``cpu_time``, ``wall_time``, ``startup``,
  ``output_size``), ``SandboxCrashed`` carries the exit code or signal.
  After either, every child and everything it forked are gone and every
  further call raises the same error (fail closed). ``SandboxCallError``
  (the candidate raised an ordinary exception) leaves the sandbox usable.
- ``wall_time`` is per call and counts from when the call is sent to a
  ready child (neither start-up nor waiting for a free child counts);
  start-up has its own ``startup`` limit.

POSIX only (``fork``, ``resource.setrlimit``); the jail and the memory limit need Linux.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from typing import Any, Literal

from opentelemetry import trace

from .._errors import ConfigError
from .._telemetry import ATTR_SANDBOX_ISOLATION, ATTR_SANDBOX_LAYERS, ATTR_SANDBOX_MISSING
from ._child import _child_main, _text
from ._errors import (
    _DURING,
    SandboxCallError,
    SandboxCrashed,
    SandboxError,
    SandboxLimit,
    SandboxLimitExceeded,
    SandboxLimits,
    SandboxUnavailable,
    _describe,
    _MiB,
    _signal_name,
    sandbox_finding,
)
from ._jail import LAYERS, JailPolicy, plan_jail
from ._net import Broker
from ._warm import _EXIT, _PID, Spawned, Template
from ._wire import _HEADER, _dumps, _frame, _loads_plain, _pickle_client

__all__ = ["ChildOutput", "JailPolicy", "ProcessSandbox", "SandboxCallError", "SandboxCrashed",
           "SandboxError", "SandboxLimit", "SandboxLimitExceeded", "SandboxLimits",
           "SandboxUnavailable", "SandboxedClient", "_child_main", "_frame", "_loads_plain",
           "sandbox_finding"]

ChildOutput = Literal["discard", "inherit"]

_EXIT_GRACE = 1.0
"""Seconds a child that closed its pipe gets to finish exiting before it is killed."""
_DISPOSE_WAIT = 5.0
"""Seconds ``dispose`` waits for a killed child's supervisor to report it gone."""


# -- the parent -------------------------------------------------------------------


class _Deadline(Exception):
    pass


class _Gone(Exception):
    pass


class _Oversize(Exception):
    pass


class _Child:
    """One jailed child: the parent's ends of its data pipes and of its supervisor's pipes.

    Only the thread that holds a child (see ``SandboxedClient._acquire``)
    reads, writes or closes its pipes; any thread may ``kill`` it. Kept apart
    from the proxy so a ``weakref.finalize`` can stop it without keeping the
    proxy alive. The child is not this process's own: its supervisor (see
    ``_warm``) kills it on request and reports its pid, wait status and CPU
    time on the status pipe, so no pid is ever signalled after it was reaped.
    """

    def __init__(self, spawned: Spawned, scratch: str, network: tuple[str, ...],
                 timeout: float) -> None:
        self.broker: Broker | None = None
        if network:
            self.broker = Broker(spawned.broker, network, timeout)
        else:
            spawned.broker.close()
        self.read_fd = spawned.read_fd
        self.write_fd = spawned.write_fd
        self.ctl_fd = spawned.ctl_fd
        self.status_fd = spawned.status_fd
        self.scratch = scratch
        self.status: int | None = None
        self.cpu_seconds = 0.0
        self.cpu_soft: float = math.inf
        """The RLIMIT_CPU soft limit the child set, from its ``ready`` message."""
        self.layers: tuple[str, ...] = ()
        """The jail's layers in force, from its ``ready`` message."""
        self.pid = 0
        """The jailed process's pid in this process's PID namespace (0 until known)."""
        self.reaped = False
        self.owner = os.getpid()
        self._status_buffer = b""
        self._lock = threading.Lock()
        for fd in (self.read_fd, self.write_fd, self.ctl_fd, self.status_fd):
            os.set_blocking(fd, False)
        self.reader = select.poll()
        self.reader.register(self.read_fd, select.POLLIN)
        self.writer = select.poll()
        self.writer.register(self.write_fd, select.POLLOUT)

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(_frame(data))
        while view:
            _wait(self.writer, deadline)
            try:
                view = view[os.write(self.write_fd, view):]
            except BlockingIOError:
                continue
            except OSError:  # EPIPE: the child is gone
                raise _Gone from None

    def receive(self, deadline: float, max_size: int) -> bytes:
        (size,) = _HEADER.unpack(self._read(_HEADER.size, deadline))
        if size > max_size:
            raise _Oversize(size)
        return self._read(size, deadline)

    def _read(self, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        while size:
            _wait(self.reader, deadline)
            try:
                chunk = os.read(self.read_fd, min(size, _MiB))
            except BlockingIOError:
                continue
            except OSError:
                raise _Gone from None
            if not chunk:
                raise _Gone
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def read_status(self, timeout: float) -> bool:
        """Read what the supervisor wrote, for up to ``timeout`` s; True once the child is gone."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        with self._lock:
            if self.reaped or self.status_fd < 0:
                return True
            poller.register(self.status_fd, select.POLLIN)
        while True:
            with self._lock:
                if self._take_status():
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            poller.poll(max(1, math.ceil(min(remaining, 0.05) * 1000)))

    def _take_status(self) -> bool:
        """Under the lock: consume available status bytes; True when the final record is in."""
        while True:
            try:
                chunk = os.read(self.status_fd, 64)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.reaped = True  # the supervisor is gone: so is the child
                break
            self._status_buffer += chunk
        buffer = self._status_buffer
        if len(buffer) >= _PID.size and not self.pid:
            (self.pid,) = _PID.unpack(buffer[:_PID.size])
        if len(buffer) >= _PID.size + _EXIT.size:
            self.status, self.cpu_seconds = _EXIT.unpack(buffer[_PID.size:_PID.size + _EXIT.size])
            self.reaped = True
        return self.reaped

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the child to exit by itself."""
        return self.read_status(timeout)

    def kill(self) -> None:
        """Ask the supervisor to SIGKILL the child (and so its whole PID namespace). Any thread."""
        with self._lock:
            if not self.reaped and self.ctl_fd >= 0 and os.getpid() == self.owner:
                with contextlib.suppress(OSError):
                    os.write(self.ctl_fd, b"k")

    def dispose(self) -> None:
        """Kill, wait for the supervisor's report, close the pipes, remove the scratch.

        Idempotent; only by the thread holding the child.
        """
        if os.getpid() != self.owner:
            return  # a forked copy of the parent: the child is not ours to stop
        self.kill()
        self.read_status(_DISPOSE_WAIT)
        with self._lock:
            fds = (self.read_fd, self.write_fd, self.ctl_fd, self.status_fd)
            self.read_fd = self.write_fd = self.ctl_fd = self.status_fd = -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _wait(poller: select.poll, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not poller.poll(math.ceil(remaining * 1000)):
        raise _Deadline


def _dispose_all(children: tuple[_Child, ...]) -> None:
    for child in children:
        child.dispose()


class SandboxedClient:
    """The parent-side proxy of a candidate running in sandbox children.

    Build it with ``ProcessSandbox.start``. ``invoke`` and ``snapshot`` are
    forwarded to an idle child; each child answers one call at a time, so at
    most ``workers`` calls run at once and the rest wait for a child (that
    wait is not part of ``wall_time``). Each call is bounded by
    ``limits.wall_time``. ``failure`` is the fatal ``SandboxError`` once one
    happened (``None`` before): then every child is stopped and every call
    raises it. ``close()`` (or leaving a ``with`` block) stops the children;
    a proxy that is garbage collected stops them too.

    It deliberately has no ``with_state`` or ``propose_update``: a sandboxed
    candidate is evaluated, never served. Promote by rebuilding the accepted
    state in-process.
    """

    def __init__(self, children: list[_Child], limits: SandboxLimits, client_type: str) -> None:
        self._children = tuple(children)
        self._limits = limits
        self._client_type = client_type
        self._ready = threading.Condition()
        self._idle: list[_Child] = []
        self._failure: SandboxError | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, _dispose_all, self._children)

    @property
    def limits(self) -> SandboxLimits:
        return self._limits

    @property
    def workers(self) -> int:
        """How many calls the sandbox answers at once (one per child)."""
        return len(self._children)

    @property
    def failure(self) -> SandboxError | None:
        """The fatal error that stopped the children (limit or crash), or ``None``."""
        return self._failure

    @property
    def pids(self) -> tuple[int, ...]:
        """The jailed processes' ids as this process sees them (each is PID 1 of its own
        PID namespace when the jail has the ``namespaces`` layer)."""
        return tuple(child.pid for child in self._children)

    @property
    def isolation(self) -> dict[str, Any]:
        """How strong the jail is: ``mode`` (the policy's ``isolation``), ``layers`` in force,
        ``missing`` (every layer of a full jail that is not in force) and ``network`` (the
        endpoints it may reach), as JSON."""
        layers = sorted(set.intersection(*(set(c.layers) for c in self._children)),
                        key=LAYERS.index)
        return {"mode": self._limits.jail.isolation, "layers": layers,
                "missing": [layer for layer in LAYERS if layer not in layers],
                "network": list(self._limits.jail.network)}

    @property
    def alive(self) -> bool:
        """True while the sandbox can answer: started, not failed, not closed."""
        return not self._closed and self._failure is None

    def invoke(self, request: Any) -> Any:
        """The candidate's output for ``request``, computed in a child.

        Raises ``SandboxCallError`` if the candidate raised, and
        ``SandboxLimitExceeded`` / ``SandboxCrashed`` (then forever) if a
        child hit a limit or died.
        """
        return self._call("invoke", request)

    def snapshot(self) -> dict[str, Any]:
        """The candidate's state as the candidate reports it (a plain dict)."""
        state = self._call("snapshot", None)
        if not isinstance(state, dict):
            raise SandboxCallError("TypeError", f"snapshot returned a {type(state).__name__}",
                                   during=_DURING["snapshot"])
        return state

    def close(self) -> None:
        """Ask the children to exit and make sure they and everything they forked are gone.

        Idempotent. A call in flight on another thread is cut short and
        raises ``SandboxError``.
        """
        with self._ready:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._ready.notify_all()
        for child in self._children:
            if child not in idle:
                child.kill()  # busy: its caller disposes of it when the call returns
        if self._failure is None:
            deadline = time.monotonic() + _EXIT_GRACE
            for child in idle:
                with contextlib.suppress(_Deadline, _Gone):
                    child.send(_dumps(("close", None)), deadline)
            for child in idle:
                child.wait_exit(max(0.0, deadline - time.monotonic()))
        _dispose_all(tuple(idle))

    def __enter__(self) -> SandboxedClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("failed" if self._failure is not None
                 else "closed" if self._closed else "running")
        return (f"<SandboxedClient {self._client_type} workers={self.workers} "
                f"pids={list(self.pids)} {state}>")

    # -- start-up --

    def _start(self, payload: dict[str, Any], state: dict[str, Any]) -> None:
        """Bring every child to ready, then build the candidate in each; raise on any failure."""
        init = _dumps(payload)
        deadline = time.monotonic() + self._limits.startup
        # Send to all before reading from any: the children start up side by side.
        for child in self._children:
            self._guarded(child, "start", lambda c: c.send(init, deadline))
        for child in self._children:
            reply = self._guarded(child, "start", lambda c: self._receive(c, "start", deadline))
            self._check_ready(child, reply)
        build = self._encode("build", state)
        deadline = time.monotonic() + self._limits.wall_time
        for child in self._children:
            self._guarded(child, "build", lambda c: c.send(build, deadline))
        for child in self._children:
            reply = self._guarded(child, "build", lambda c: self._receive(c, "build", deadline))
            self._result(child, "build", reply)
        with self._ready:
            self._idle = list(self._children)
            self._ready.notify_all()

    def _check_ready(self, child: _Child, reply: tuple[Any, ...]) -> None:
        kind = reply[0]
        if (kind == "ready" and len(reply) == 3 and isinstance(reply[1], int)
                and isinstance(reply[2], tuple)):
            child.cpu_soft = reply[1]
            child.layers = tuple(str(layer) for layer in reply[2])
            # The supervisor wrote the pid before the child could answer: it is there to read.
            deadline = time.monotonic() + _EXIT_GRACE
            while not child.pid and not child.reaped and time.monotonic() < deadline:
                child.read_status(0.01)
            return
        if kind == "jail_refused" and len(reply) == 3:
            raise SandboxUnavailable(str(reply[1])[:100], str(reply[2]))
        if kind == "load_failed" and len(reply) == 3:
            raise ConfigError(
                f"the sandbox child could not load the {self._client_type} client "
                f"({reply[1]}: {reply[2]}); every class and function it needs must be importable "
                "from the parent's sys.path, or use sandbox=\"inline\"")
        if kind == "too_small" and len(reply) == 2 and isinstance(reply[1], int):
            raise ConfigError(
                f"the memory limit ({_describe('memory', self._limits.memory)}) is below the "
                f"{reply[1] / _MiB:.0f} MiB of address space the loaded {self._client_type} "
                "client already uses; raise SandboxLimits.memory")
        if kind == "limits_failed" and len(reply) == 2:
            raise ConfigError(f"the process sandbox cannot set its limits here ({reply[1]}); "
                              "use sandbox=\"inline\"")
        raise self._fail(self._protocol_error("start", f"unexpected reply {kind!r}"))

    # -- calls --

    def _call(self, op: str, arg: Any) -> Any:
        message = self._encode(op, arg)
        child = self._acquire(op)
        try:
            deadline = time.monotonic() + self._limits.wall_time
            reply = self._guarded(child, op,
                                  lambda c: self._round_trip(c, op, message, deadline))
            return self._result(child, op, reply)
        finally:
            self._release(child)

    def _acquire(self, op: str) -> _Child:
        with self._ready:
            while True:
                if self._failure is not None:
                    raise self._failure.with_traceback(None)
                if self._closed:
                    raise SandboxError("the sandbox is closed", during=_DURING[op])
                if self._idle:
                    return self._idle.pop()
                self._ready.wait()

    def _release(self, child: _Child) -> None:
        with self._ready:
            if self._failure is None and not self._closed:
                self._idle.append(child)
                self._ready.notify()
                return
        child.dispose()

    def _encode(self, op: str, arg: Any) -> bytes:
        try:
            return _dumps((op, arg))
        except Exception as exc:
            # Nothing reached a child, so the sandbox stays usable.
            raise SandboxError(f"the request could not be sent to the sandbox child "
                               f"({type(exc).__name__}: {_text(exc)[:200]})",
                               during=_DURING[op]) from None

    def _round_trip(self, child: _Child, op: str, message: bytes,
                    deadline: float) -> tuple[Any, ...]:
        child.send(message, deadline)
        return self._receive(child, op, deadline)

    def _receive(self, child: _Child, op: str, deadline: float) -> tuple[Any, ...]:
        raw = child.receive(deadline, self._limits.max_output)
        try:
            reply = _loads_plain(raw)
        except Exception as exc:
            raise self._fail(self._protocol_error(op, f"{type(exc).__name__}: {exc}")) from None
        if not isinstance(reply, tuple) or not reply or not isinstance(reply[0], str):
            raise self._fail(self._protocol_error(op, "not a tagged tuple"))
        if reply[0] == "memory":
            raise self._fail(SandboxLimitExceeded("memory", self._limits.memory,
                                                  during=_DURING[op],
                                                  detail="an allocation failed"))
        return reply

    def _result(self, child: _Child, op: str, reply: tuple[Any, ...]) -> Any:
        if reply[0] == "ok" and len(reply) == 2:
            return reply[1]
        if reply[0] == "raised" and len(reply) == 3:
            raise SandboxCallError(str(reply[1])[:200], str(reply[2]), during=_DURING[op])
        raise self._fail(self._protocol_error(op, f"unexpected reply {reply[0]!r}"))

    def _guarded(self, child: _Child, op: str, step: Any) -> Any:
        """Run one pipe step on ``child``; turn a deadline, a dead child or a flood into a failure."""
        during = _DURING[op]
        try:
            return step(child)
        except _Deadline:
            limit: SandboxLimit = "startup" if op == "start" else "wall_time"
            configured = self._limits.startup if op == "start" else self._limits.wall_time
            raise self._fail(SandboxLimitExceeded(limit, configured, during=during)) from None
        except _Gone:
            raise self._fail(self._death(child, during)) from None
        except _Oversize as exc:
            raise self._fail(SandboxLimitExceeded(
                "output_size", self._limits.max_output, during=during,
                detail=f"a reply of {exc.args[0]} bytes")) from None

    def _protocol_error(self, op: str, why: str) -> SandboxCrashed:
        return SandboxCrashed(
            f"the sandbox child sent a malformed reply {_DURING[op]} ({why[:200]}); "
            "it was stopped", during=_DURING[op])

    def _death(self, child: _Child, during: str) -> SandboxError:
        """Classify a child whose pipe closed: a limit the kernel enforced, or a crash."""
        if not child.wait_exit(_EXIT_GRACE):
            return SandboxCrashed(f"the sandbox child closed its pipe {during} but kept running; "
                                  "it was stopped", during=during)
        child.dispose()
        status = child.status
        if status is None:
            return SandboxCrashed(f"the sandbox child died {during}; its exit status is unknown",
                                  during=during)
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            # SIGXCPU is the soft RLIMIT_CPU; SIGKILL after using the whole allowance is
            # the hard one (a candidate that ignored SIGXCPU).
            if number == signal.SIGXCPU or (
                    number == signal.SIGKILL and child.cpu_seconds >= child.cpu_soft - 0.05):
                return SandboxLimitExceeded(
                    "cpu_time", self._limits.cpu_time, during=during,
                    detail=f"{child.cpu_seconds:.2f} s of CPU used in all, start-up included")
            hint = (" (perhaps the system's out-of-memory killer)"
                    if number == signal.SIGKILL else "")
            return SandboxCrashed(
                f"the sandbox child was killed by {_signal_name(number)} {during}{hint}",
                during=during, signal=number)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        return SandboxCrashed(f"the sandbox child exited with code {code} {during}",
                              during=during, exitcode=code)

    def _fail(self, error: SandboxError) -> SandboxError:
        """Stop every child for good; the first error becomes the answer to every later call.

        Idle children are disposed of here; busy ones are killed, and the
        thread holding each disposes of it when its call returns.
        """
        with self._ready:
            if self._closed and self._failure is None:
                # The caller closed the sandbox under this call: that is not the candidate's fault.
                return SandboxError("the sandbox was closed during the call", during=error.during)
            if self._failure is None:
                self._failure = error
            idle, self._idle = self._idle, []
            self._ready.notify_all()
        for child in self._children:
            child.kill()
        _dispose_all(tuple(idle))
        return self._failure


class ProcessSandbox:
    """Runs candidates in jailed child processes under ``limits`` (see ``SandboxLimits``).

    ``workers``: children per candidate, each loading the client and building
    the candidate, so that many calls run at once (every limit applies to
    each child). ``python``: the interpreter for the template process
    (default ``sys.executable``; set it when embedded, e.g. under uWSGI).
    ``child_output``: ``"discard"`` (the default: a candidate cannot write
    request content to the service's logs) or ``"inherit"`` (the children's
    stdout and stderr go to this process's stderr, with ``faulthandler`` on:
    for debugging crashes).

    With ``limits.jail.warm`` (the default) one template process is started
    by ``check_client`` or the first ``start`` and forks every child;
    ``close()`` (or garbage collection, or interpreter exit) stops it.

    Raises ``ConfigError`` on platforms without ``fork`` and ``resource`` (Windows).
    """

    def __init__(self, limits: SandboxLimits | None = None, *, workers: int = 1,
                 python: str | None = None, child_output: ChildOutput = "discard") -> None:
        if sys.platform == "win32":
            raise ConfigError("the process sandbox needs a POSIX system (resource.setrlimit); "
                              "use sandbox=\"inline\" on Windows")
        if limits is None:
            limits = SandboxLimits()
        if not isinstance(limits, SandboxLimits):
            raise ConfigError(f"limits must be SandboxLimits, got {type(limits).__name__}")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
            raise ConfigError(f"workers must be an integer from 1 to 256, got {workers!r}")
        python = python or sys.executable
        if not python:
            raise ConfigError("sys.executable is empty: pass python=... (the interpreter the "
                              "sandbox child runs with)")
        if child_output not in ("discard", "inherit"):
            raise ConfigError(f"child_output must be 'discard' or 'inherit', got {child_output!r}")
        if limits.jail.isolation != "off" and not sys.platform.startswith("linux"):
            raise ConfigError(f"isolation {limits.jail.isolation!r} needs Linux (namespaces, "
                              "Landlock, seccomp); on this system set [sandbox] isolation = "
                              "\"off\" (resource limits only) or use sandbox=\"inline\"")
        self.limits = limits
        self.workers = workers
        self.python = python
        self.child_output: ChildOutput = child_output
        self._template: Template | None = None
        self._modules: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_template, [None])

    def check_client(self, client: Any) -> None:
        """Raise ``ConfigError`` now if ``client`` could not be sent to a sandbox child.

        With a warm jail this also starts the template and has it import the
        client's modules, so the first review starts warm too.
        """
        _, modules = _pickle_client(client)
        if self.limits.jail.warm:
            self._warm(modules)

    def start(self, client: Any, state: dict[str, Any]) -> SandboxedClient:
        """Start the children, load ``client`` in each and build ``client.with_state(state)``.

        Returns a ready proxy (its ``isolation`` says which jail layers are in
        force). Raises ``SandboxUnavailable`` (a ``ConfigError``) when a
        strict jail is missing a layer; ``ConfigError`` when the client
        cannot be pickled or loaded in a child, or the memory limit is below
        what the loaded client maps; ``SandboxLimitExceeded`` (``startup``
        for start-up, ``wall_time``/``memory``/``cpu_time`` for building);
        ``SandboxCrashed``; ``SandboxCallError`` when ``with_state`` raised.
        On any error every child is already gone.
        """
        pickled, modules = _pickle_client(client)
        if self.limits.jail.warm:
            template, cold = self._warm(modules), None
        else:
            template = cold = self._new_template(modules)
        try:
            proxy = self._start_children(template, pickled, state, type(client).__qualname__)
        finally:
            if cold is not None:
                cold.close()  # the children are up; a cold template serves only them
        _record_isolation(proxy.isolation)
        return proxy

    def _start_children(self, template: Template, pickled: bytes, state: dict[str, Any],
                        client_type: str) -> SandboxedClient:
        children: list[_Child] = []
        try:
            for _ in range(self.workers):
                children.append(self._spawn(template))
        except BaseException:
            _dispose_all(tuple(children))
            raise
        proxy = SandboxedClient(children, self.limits, client_type)
        try:
            proxy._start({"sys_path": list(sys.path), "memory": self.limits.memory,
                          "cpu_time": self.limits.cpu_time, "client": pickled,
                          "faulthandler": self.child_output == "inherit"}, state)
        except BaseException:
            # This thread holds every child until start-up is over: stop them all here.
            with proxy._ready:
                proxy._closed = True
            proxy._finalizer()
            raise
        return proxy

    def close(self) -> None:
        """Stop the template process (sandboxes already started keep running). Idempotent."""
        with self._lock:
            template, self._template = self._template, None
        if template is not None:
            template.close()

    def _warm(self, modules: frozenset[str]) -> Template:
        with self._lock:
            if self._template is None or not self._template.alive:
                if self._template is not None:
                    self._template.close()
                self._template = self._new_template(modules)
                self._modules = modules
                self._finalizer.detach()
                self._finalizer = weakref.finalize(self, _close_template, [self._template])
            elif not modules <= self._modules:
                self._modules = self._modules | modules
                self._template.preload(modules)
            return self._template

    def _new_template(self, modules: frozenset[str]) -> Template:
        output: Any = subprocess.DEVNULL
        if self.child_output == "inherit":
            # stdout too goes to stderr: a candidate's prints must not mix into the
            # service's own output (a CLI printing JSON, for example).
            try:
                output = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
            except (OSError, ValueError):
                output = 2
        env = {name: os.environ[name] for name in self.limits.jail.env if name in os.environ}
        # glibc reserves up to 128 MiB of address space per thread arena; RLIMIT_AS
        # counts reservations, so cap the arenas and the limit tracks real use.
        env["MALLOC_ARENA_MAX"] = "2"
        template = Template(self.python, env, output)
        template.preload(modules)
        return template

    def _spawn(self, template: Template) -> _Child:
        scratch = tempfile.mkdtemp(prefix="guardrails-jail-")
        try:
            spawned = template.spawn(plan_jail(self.limits.jail, scratch))
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return _Child(spawned, scratch, self.limits.jail.network, self.limits.wall_time)


def _close_template(holder: list[Template | None]) -> None:
    if holder[0] is not None:
        holder[0].close()


def _record_isolation(isolation: dict[str, Any]) -> None:
    """Put the jail's strength on the current span (the guard's sandbox stage)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(ATTR_SANDBOX_ISOLATION, isolation["mode"])
        span.set_attribute(ATTR_SANDBOX_LAYERS, isolation["layers"])
        span.set_attribute(ATTR_SANDBOX_MISSING, isolation["missing"])
