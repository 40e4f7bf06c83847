"""A process sandbox for untrusted candidates: a proxy client backed by child processes.

``ProcessSandbox(limits).start(client, state)`` spawns fresh interpreters
(``workers`` of them, one by default), hands each the pickled serving client
and the candidate state, and builds the candidate there with
``client.with_state(state)``. The returned ``SandboxedClient`` forwards
``invoke`` and ``snapshot`` over pipes, so the canary runner and the guard's
"snapshot equals the evaluated state" check use it exactly like an
in-process client.

What a caller may rely on:

- A child gets the client, the candidate state and the requests, nothing
  else: no ledger, no expectations, no file descriptors of the parent
  (``close_fds``), its own session (terminal signals do not reach it). It
  inherits the environment and working directory.
- A child returns outputs only, as plain values (``None``, ``bool``,
  ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``bytearray``,
  ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``). The parent decodes
  them with an unpickler that refuses every other global, so nothing a child
  sends can run code in the parent. Judging stays in the parent.
- Every failure is a typed ``SandboxError``: ``SandboxLimitExceeded`` names
  the limit (``memory``, ``cpu_time``, ``wall_time``, ``startup``,
  ``output_size``), ``SandboxCrashed`` carries the exit code or signal.
  After either, every child and its process group are gone and every
  further call raises the same error (fail closed). ``SandboxCallError``
  (the candidate raised an ordinary exception) leaves the sandbox usable.
- ``wall_time`` is per call and counts from when the call is sent to a
  ready child (neither start-up nor waiting for a free child counts);
  start-up has its own ``startup`` limit.

POSIX only (``resource.setrlimit``); the memory limit is enforced on Linux.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import types
import weakref
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._decision import Finding
from .._errors import ConfigError, GuardrailsError

SandboxLimit = Literal["memory", "cpu_time", "wall_time", "startup", "output_size"]
"""The limits a ``SandboxLimitExceeded`` can name."""

ChildOutput = Literal["discard", "inherit"]

_MiB = 1024 * 1024
_HEADER = struct.Struct(">Q")
_RESERVE = _MiB
_EMERGENCY: list[bytearray] = []
"""In the child: memory held back so it can still report a ``MemoryError``."""
_EXIT_GRACE = 1.0
"""Seconds a child that closed its pipe gets to finish exiting before it is killed."""
_TEXT_LIMIT = 2000
_TRANSIENT = frozenset({"TimeoutError", "ConnectionError", "ConnectionResetError",
                        "ConnectionRefusedError", "ConnectionAbortedError", "BrokenPipeError"})

_DURING = {
    "start": "during start-up",
    "build": "while building the candidate",
    "invoke": "while answering a request",
    "snapshot": "while taking a snapshot",
}


class SandboxLimits(BaseModel):
    """The limits a sandboxed candidate runs under. Frozen; part of the guard's policy.

    ``wall_time``: seconds per call (building the candidate, each ``invoke``,
    each ``snapshot``), counted from when the call is sent to a ready child;
    the parent kills the sandbox when it runs out.
    ``cpu_time``: CPU seconds each child may use, in all, once the client is
    loaded (start-up imports are not counted); ``RLIMIT_CPU`` counts whole
    seconds, so the candidate gets between ``cpu_time`` and one second more.
    ``memory``: bytes of address space for each child (``RLIMIT_AS``), in
    force from when the client is loaded, before the candidate is built; a
    limit below what the loaded client already maps is a ``ConfigError``.
    ``startup``: seconds for the child to start, import and unpickle the client
    (the serving code, trusted: it loads before the limits are set).
    ``max_output``: bytes of the largest reply the child may send.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    wall_time: float = Field(default=10.0, gt=0)
    cpu_time: float = Field(default=60.0, gt=0)
    memory: int = Field(default=2048 * _MiB, gt=0)
    startup: float = Field(default=30.0, gt=0)
    max_output: int = Field(default=64 * _MiB, gt=0)


# -- errors -----------------------------------------------------------------------


class SandboxError(GuardrailsError):
    """Base class of every error the process sandbox raises.

    ``during`` says what the child was doing (``"during start-up"``,
    ``"while answering a request"`` ...). ``evidence()`` is a JSON dict for a
    ``Finding``; neither contains request or output content.
    """

    def __init__(self, message: str, *, during: str) -> None:
        super().__init__(message)
        self.during = during

    def evidence(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "during": self.during}


class SandboxLimitExceeded(SandboxError):
    """The candidate hit ``limit``; the child has been killed.

    ``configured`` is the limit's value (seconds or bytes, as in ``SandboxLimits``).
    """

    def __init__(self, limit: SandboxLimit, configured: float, *, during: str,
                 detail: str = "") -> None:
        who = "the sandbox" if limit == "startup" else "the sandboxed candidate"
        super().__init__(
            f"{who} hit the {limit} limit ({_describe(limit, configured)}) {during}"
            + (f": {detail}" if detail else "") + "; the sandbox was stopped",
            during=during)
        self.limit: SandboxLimit = limit
        self.configured = configured

    def evidence(self) -> dict[str, Any]:
        return {**super().evidence(), "limit": self.limit, "configured": self.configured}


class SandboxCrashed(SandboxError):
    """The child died (or broke the protocol) without hitting a known limit.

    ``exitcode`` is set when it exited, ``signal`` (a number) when a signal
    killed it; both are ``None`` when the parent stopped a child that sent
    malformed replies or closed its pipe.
    """

    def __init__(self, message: str, *, during: str, exitcode: int | None = None,
                 signal: int | None = None) -> None:
        super().__init__(message, during=during)
        self.exitcode = exitcode
        self.signal = signal

    @property
    def signal_name(self) -> str | None:
        return _signal_name(self.signal) if self.signal is not None else None

    def evidence(self) -> dict[str, Any]:
        return {**super().evidence(), "exitcode": self.exitcode, "signal": self.signal_name}


class SandboxCallError(SandboxError):
    """The candidate raised an ordinary exception; the sandbox stays usable.

    ``type_name`` is the exception's class name. ``detail`` is its message as
    the candidate wrote it: it may quote the request, so it is kept out of
    ``str(error)`` and ``evidence()``; do not log it for hidden cases.
    ``transient`` is true for ``TimeoutError`` and the connection errors.
    """

    def __init__(self, type_name: str, detail: str, *, during: str) -> None:
        super().__init__(f"the sandboxed candidate raised {type_name} {during}", during=during)
        self.type_name = type_name
        self.detail = detail
        # The canary runner retries errors marked transient: the child's own timeouts and
        # connection errors keep that meaning across the process boundary.
        self.transient = type_name in _TRANSIENT

    def evidence(self) -> dict[str, Any]:
        return {**super().evidence(), "raised": self.type_name}


def sandbox_finding(error: SandboxError, *, check: str = "sandbox") -> Finding:
    """A failed ``Finding`` for ``error``: its message, and evidence naming the limit or signal."""
    return Finding(check=check, passed=False, message=str(error), evidence=error.evidence())


def _describe(limit: SandboxLimit, configured: float) -> str:
    if limit in ("memory", "output_size"):
        return (f"{configured / _MiB:g} MiB" if configured >= _MiB and configured % _MiB == 0
                else f"{configured:g} bytes")
    if limit == "cpu_time":
        return f"{configured:g} s of CPU"
    if limit == "wall_time":
        return f"{configured:g} s per call"
    return f"{configured:g} s"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- the wire ---------------------------------------------------------------------
#
# Frames are an 8-byte big-endian length and a pickle. Parent to child: an
# ordinary pickle (the parent is trusted). Child to parent: decoded by
# ``_PlainUnpickler``, which resolves no globals at all, so a compromised
# child can send data but never code.

_PLAIN_GLOBALS = frozenset({("builtins", "complex")})
"""The one global a plain value needs: ``complex`` pickles as a call to it."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return complex
        raise pickle.UnpicklingError(f"{module}.{name} is not a plain value")


def _loads_plain(data: bytes) -> Any:
    """Decode a pickle holding only plain values; anything else raises ``UnpicklingError``."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


class _ClientPickler(pickle.Pickler):
    """Pickles the client and notes every class or function it needs from ``__main__``.

    The child is a fresh interpreter that does not run the parent's main
    script, so those would fail to load there; better to say so in the parent.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.from_main: list[str] = []

    def persistent_id(self, obj: Any) -> None:
        if (isinstance(obj, type | types.FunctionType)
                and getattr(obj, "__module__", None) == "__main__"):
            self.from_main.append(getattr(obj, "__qualname__", repr(obj)))
        return None


def _pickle_client(client: Any) -> bytes:
    name = type(client).__qualname__
    buffer = io.BytesIO()
    pickler = _ClientPickler(buffer)
    try:
        pickler.dump(client)
    except Exception as exc:
        raise ConfigError(
            f"the {name} client cannot be pickled for the process sandbox "
            f"({type(exc).__name__}: {exc}); use sandbox=\"inline\" or make the client "
            "picklable (module-level classes and functions, no lambdas, locks or open "
            "connections, or a __reduce__ that rebuilds them)") from None
    if pickler.from_main:
        raise ConfigError(
            f"the {name} client needs {', '.join(sorted(set(pickler.from_main)))} from __main__, "
            "which the sandbox child cannot import; move it to an importable module or use "
            "sandbox=\"inline\"")
    return buffer.getvalue()


def _read_exact(fd: int, size: int) -> bytes | None:
    """Blocking read of exactly ``size`` bytes (child side); ``None`` on end of file."""
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, min(size, _MiB))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


# -- the child --------------------------------------------------------------------


def _child_main(read_fd: int, write_fd: int) -> None:
    """Entry point of the sandbox child (run by ``ProcessSandbox``; not a public API)."""
    _EMERGENCY.append(bytearray(_RESERVE))

    def send(*reply: Any) -> None:
        _write_all(write_fd, _frame(_dumps(reply)))

    def receive() -> Any:
        header = _read_exact(read_fd, _HEADER.size)
        body = None if header is None else _read_exact(read_fd, _HEADER.unpack(header)[0])
        if body is None:
            os._exit(0)  # the parent is gone or closed the sandbox
        return pickle.loads(body)  # from the trusted parent

    init = receive()
    sys.path[:] = init["sys_path"]
    if init["faulthandler"]:
        import faulthandler

        faulthandler.enable()
    # The client is the serving code, trusted like this process: it loads before the
    # limits, so a failure here is a configuration problem, never a limit the
    # candidate hit. The limits are absolute, so what loading used still counts.
    try:
        client = pickle.loads(init["client"])
    except BaseException as exc:
        send("load_failed", type(exc).__name__, _text(exc))
        os._exit(2)
    in_use = _address_space()
    if in_use is not None and in_use >= init["memory"]:
        send("too_small", in_use)
        os._exit(2)
    try:
        _limit_memory(init["memory"])
        cpu_soft = _limit_cpu(init["cpu_time"])
    except (ValueError, OSError) as exc:
        send("limits_failed", f"{type(exc).__name__}: {exc}")
        os._exit(2)
    send("ready", cpu_soft)

    candidate: Any = None
    while True:
        op = "?"
        try:
            op, arg = receive()
            if op == "close":
                os._exit(0)  # no atexit handlers: candidate code must not delay the exit
            if op == "build":
                candidate, client = client.with_state(arg), None
                value = None
            elif op == "invoke":
                value = candidate.invoke(arg)
            elif op == "snapshot":
                value = candidate.snapshot()
            else:
                raise ValueError(f"unknown operation {op!r}")
            reply = _plain_reply(value)
        except MemoryError:
            _EMERGENCY.clear()  # room to report it; the parent stops this child next
            reply = _dumps(("memory", op))
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        except Exception as exc:
            reply = _dumps(("raised", type(exc).__name__, _text(exc)))
        except BaseException:
            os._exit(1)
        try:
            _write_all(write_fd, _frame(reply))
        except OSError:
            os._exit(0)  # the parent is gone


def _plain_reply(value: Any) -> bytes:
    """``("ok", value)`` pickled, checked with the parent's decoder so the error is the child's."""
    try:
        reply = _dumps(("ok", value))
        _loads_plain(reply)
    except MemoryError:
        raise
    except Exception as exc:
        return _dumps(("raised", "TypeError",
                       f"the output (a {type(value).__qualname__}) cannot leave the sandbox: "
                       f"{exc}; return plain values (None, bool, int, float, str, bytes, list, "
                       "tuple, dict, set)"))
    return reply


def _text(exc: BaseException) -> str:
    try:
        return str(exc)[:_TEXT_LIMIT]
    except Exception:
        return "<unprintable>"


def _address_space() -> int | None:
    """Bytes of address space this process maps now (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _limit_memory(limit: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    # A candidate that crashes should not leave a core file of up to the memory limit.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _limit_cpu(cpu_time: float) -> int:
    """Set RLIMIT_CPU to ``cpu_time`` beyond what start-up used; return the soft limit."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_time)
    # The kernel sends SIGXCPU at the soft limit and SIGKILL at the hard one, so a
    # candidate that ignores SIGXCPU still dies a second later.
    hard = soft + 1
    _, current_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return soft


# -- the parent -------------------------------------------------------------------


class _Deadline(Exception):
    pass


class _Gone(Exception):
    pass


class _Oversize(Exception):
    pass


class _Child:
    """One child process and the parent's ends of its pipes.

    Only the thread that holds a child (see ``SandboxedClient._acquire``)
    reads, writes or closes its pipes; any thread may ``kill`` it. Kept apart
    from the proxy so a ``weakref.finalize`` can stop it without keeping the
    proxy alive.
    """

    def __init__(self, process: subprocess.Popen[bytes], read_fd: int, write_fd: int) -> None:
        self.process = process
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.status: int | None = None
        self.cpu_seconds = 0.0
        self.cpu_soft: float = math.inf
        """The RLIMIT_CPU soft limit the child set, from its ``ready`` message."""
        self.reaped = False
        self.owner = os.getpid()
        # Serialises kill and reap: a pid (the process group id) must never be
        # signalled after it was reaped, when the kernel may give it to another process.
        self._lock = threading.Lock()
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
        self.reader = select.poll()
        self.reader.register(read_fd, select.POLLIN)
        self.writer = select.poll()
        self.writer.register(write_fd, select.POLLOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

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

    def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the child to exit by itself, without reaping it.

        Not reaping keeps its pid (the process group id) reserved, so ``dispose``
        can still kill grandchildren it left behind.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self.reaped:
                    return True
                try:
                    if hasattr(os, "waitid"):
                        exited = os.waitid(os.P_PID, self.pid,
                                           os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
                    else:  # pragma: no cover - platforms without waitid reap here
                        exited = self._reap(os.WNOHANG)
                except ChildProcessError:
                    exited = True
            if exited:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the child's process group (it and whatever it forked). Any thread."""
        with self._lock:
            if not self.reaped and os.getpid() == self.owner:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)

    def dispose(self) -> None:
        """Kill, reap and close the pipes. Idempotent; only by the thread holding the child."""
        if os.getpid() != self.owner:
            return  # a forked copy of the parent: the child is not ours to stop
        self.kill()
        with self._lock:
            if not self.reaped:
                self._reap(0)
        for fd in (self.read_fd, self.write_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1

    def _reap(self, options: int) -> bool:
        try:
            pid, status, usage = os.wait4(self.pid, options)
        except ChildProcessError:
            # Someone else reaped it (a waitpid(-1) elsewhere): the status is lost.
            self.reaped = True
            self.process.returncode = -1
            return True
        if pid == 0:
            return False
        self.reaped = True
        self.status = status
        self.cpu_seconds = usage.ru_utime + usage.ru_stime
        # Tell Popen the child is reaped, so it never waits for it or warns about it.
        self.process.returncode = os.waitstatus_to_exitcode(status)
        return True


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
        """The children's process ids (each also its process group id)."""
        return tuple(child.pid for child in self._children)

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
        """Ask the children to exit and make sure they and their process groups are gone.

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
        if kind == "ready" and len(reply) == 2 and isinstance(reply[1], int):
            child.cpu_soft = reply[1]
            return
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
    """Runs candidates in child processes under ``limits``.

    ``workers``: children per candidate, each loading the client and building
    the candidate, so that many calls run at once (every limit applies to
    each child). ``python``: the interpreter for the children (default
    ``sys.executable``; set it when embedded, e.g. under uWSGI).
    ``child_output``: ``"discard"`` (the default: a candidate cannot write
    request content to the service's logs) or ``"inherit"`` (the children's
    stdout and stderr go to this process's stderr, with ``faulthandler`` on:
    for debugging crashes).

    Raises ``ConfigError`` on platforms without ``resource`` (Windows).
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
        self.limits = limits
        self.workers = workers
        self.python = python
        self.child_output: ChildOutput = child_output

    def check_client(self, client: Any) -> None:
        """Raise ``ConfigError`` now if ``client`` could not be sent to a sandbox child."""
        _pickle_client(client)

    def start(self, client: Any, state: dict[str, Any]) -> SandboxedClient:
        """Start the children, load ``client`` in each and build ``client.with_state(state)``.

        Returns a ready proxy. Raises ``ConfigError`` when the client cannot
        be pickled or loaded in a child, or the memory limit is below what
        the loaded client maps; ``SandboxLimitExceeded`` (``startup`` for
        start-up, ``wall_time``/``memory``/``cpu_time`` for building);
        ``SandboxCrashed``; ``SandboxCallError`` when ``with_state`` raised.
        On any error every child is already gone.
        """
        pickled = _pickle_client(client)
        children: list[_Child] = []
        try:
            for _ in range(self.workers):
                children.append(self._spawn())
        except BaseException:
            _dispose_all(tuple(children))
            raise
        proxy = SandboxedClient(children, self.limits, type(client).__qualname__)
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

    def _spawn(self) -> _Child:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # The child imports this module from the same place the parent did; the
        # parent's sys.path follows in the first message.
        root = str(Path(__file__).resolve().parents[2])
        bootstrap = (f"import sys; sys.path.insert(0, {root!r}); "
                     "from guardrails.sandbox._process import _child_main; "
                     f"_child_main({to_child_r}, {from_child_w})")
        output = subprocess.DEVNULL
        if self.child_output == "inherit":
            # stdout too goes to stderr: a candidate's prints must not mix into the
            # service's own output (a CLI printing JSON, for example).
            try:
                output = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
            except (OSError, ValueError):
                output = 2
        env = dict(os.environ)
        # glibc reserves up to 128 MiB of address space per thread arena; RLIMIT_AS
        # counts reservations, so cap the arenas and the limit tracks real use.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        try:
            process = subprocess.Popen(
                [self.python, "-c", bootstrap], env=env,
                stdin=subprocess.DEVNULL, stdout=output,
                stderr=None if self.child_output == "inherit" else subprocess.DEVNULL,
                pass_fds=(to_child_r, from_child_w), close_fds=True,
                # Its own session and process group: terminal signals do not reach it,
                # and killing the group also stops anything the candidate forked.
                start_new_session=True)
        except BaseException:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)
        os.close(from_child_w)
        return _Child(process, from_child_r, to_child_w)
