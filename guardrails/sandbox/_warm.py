"""The warm start: a template process that forks one fresh, jailed child per candidate.

The template is a Python interpreter started once per ``ProcessSandbox``
with a clean environment; it imports this package, the jail's libraries and
the client's modules, then waits. For each child the parent sends it four
pipe ends over a UNIX socket; the template forks a *supervisor*, which
enters the new namespaces and forks the *jailed process* (PID 1 of its own
PID namespace). The jailed process sets the remaining layers up, loads the
client and talks to the parent over the data pipes exactly as a cold child
would. Nothing passes between candidates: each is a fresh fork of the
template, which never runs candidate code.

The supervisor stays outside the jail's Landlock domain (so the jailed
process can neither signal nor trace it). It writes the jailed process's
pid to the status pipe, kills it when the parent writes to (or closes) the
control pipe, and writes its wait status and CPU time when it is gone: the
parent learns everything it used to learn from ``wait4`` on its own child.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

from .._errors import ConfigError

_PID = struct.Struct(">q")
_EXIT = struct.Struct(">qd")
"""The supervisor's final record: the jailed process's wait status and CPU seconds."""
_MESSAGE_LIMIT = 1 << 20


# -- in the template --------------------------------------------------------------------


class _Spare(NamedTuple):
    """A supervisor forked ahead of time, already in its namespaces and cgroup, waiting."""

    pid: int
    socket: socket.socket
    key: tuple[str, int]
    """The ``isolation`` and ``max_processes`` it was prepared for."""


def template_main(control_fd: int) -> None:
    """Entry point of the template process (started by ``Template``; not a public API)."""
    from . import _jail

    _jail.preload()
    control = socket.socket(fileno=control_fd)
    control.settimeout(1.0)  # wake up now and then to reap supervisors that ended
    spare: _Spare | None = None
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, _MESSAGE_LIMIT, 5)
        except TimeoutError:
            _reap()
            continue
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)  # the parent is gone: the template goes too (so do spares: EOF)
        message = pickle.loads(data)  # from the trusted parent
        if message["op"] == "preload":
            _preload(message)
            if spare is not None:  # forked before these imports: replace it
                spare = _replace(spare, control, spare.key)
        elif message["op"] == "spawn" and len(fds) == 5:
            plan = message["plan"]
            key = (plan["isolation"], plan["max_processes"])
            if spare is None or spare.key != key:
                spare = _replace(spare, control, key)
            _hand_over(spare, plan, fds)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if message["op"] == "spawn" and len(fds) == 5:
            # The next candidate's supervisor gets ready while this one's child starts
            # (forked only now that this child's pipes are closed here: it must not hold them).
            spare = _fork_spare(control, key)
        _reap()


def _replace(spare: _Spare | None, control: socket.socket, key: tuple[str, int]) -> _Spare:
    if spare is not None:
        spare.socket.close()  # EOF: it leaves its cgroup and exits
    return _fork_spare(control, key)


def _hand_over(spare: _Spare, plan: dict[str, Any], fds: list[int]) -> None:
    with contextlib.suppress(OSError):
        socket.send_fds(spare.socket, [pickle.dumps(plan)], fds)
    spare.socket.close()


def _fork_spare(control: socket.socket, key: tuple[str, int]) -> _Spare:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            control.close()
            ours.close()
            _spare_main(theirs, key)
        finally:
            os._exit(70)
    theirs.close()
    return _Spare(pid, ours, key)


def _spare_main(channel: socket.socket, key: tuple[str, int]) -> None:
    """In a spare supervisor: get into the cgroup and namespaces, then wait for a child's pipes."""
    from . import _jail

    isolation, max_processes = key
    os.setsid()  # out of the template's process group: a signal to one spares the other
    cgroup, cgroup_failed = None, None
    if isolation != "off" and os.geteuid() == 0:
        cgroup, cgroup_failed = _jail.join_pids_cgroup(max_processes + 1)
    namespaces_failed = _jail.enter_namespaces(isolation)  # type: ignore[arg-type]
    try:
        data, fds, _, _ = socket.recv_fds(channel, _MESSAGE_LIMIT, 5)
    except OSError:
        data, fds = b"", []
    channel.close()
    _close_all_but({0, 1, 2, *fds})
    if not data or len(fds) != 5:
        _jail.leave_pids_cgroup(cgroup)
        os._exit(0)
    plan = pickle.loads(data)  # from the template, which has it from the trusted parent
    _supervise(*fds, plan=plan, failures=(namespaces_failed, cgroup_failed))
    _jail.leave_pids_cgroup(cgroup)
    os._exit(0)


def _preload(message: dict[str, Any]) -> None:
    """Import the client's modules and list every ``sys.path`` folder while reading is allowed."""
    sys.path[:] = message["sys_path"]
    for name in message["modules"]:
        with contextlib.suppress(Exception):
            __import__(name)
    import importlib.machinery

    # The jail may hide a folder's listing; the import system's cache of it, filled here
    # and kept while the folder does not change, lets the child still import from it.
    for entry in sys.path:
        with contextlib.suppress(Exception):
            importlib.machinery.PathFinder.find_spec("_guardrails_warm_probe", [entry])


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _close_all_but(keep: set[int]) -> None:
    """Close every descriptor but ``keep``: a child holds its own pipes and nothing else."""
    start = 0
    for fd in sorted(keep):
        if fd > start:  # never an empty range: closerange(n, n) closes every fd from n on
            os.closerange(start, fd)
        start = fd + 1
    limit = os.sysconf("SC_OPEN_MAX")
    os.closerange(start, max(limit, start + 1) if limit > 0 else 65536)


def _supervise(to_child: int, from_child: int, ctl: int, status: int, broker: int, *,
               plan: dict[str, Any], failures: tuple[str | None, str | None]) -> None:
    """Fork the jailed process, report its pid, kill it on request, report how it ended."""
    pid = os.fork()
    if pid == 0:
        os.close(ctl)
        os.close(status)
        _run_jailed(to_child, from_child, broker, plan, *failures)
    os.close(to_child)
    os.close(from_child)
    os.close(broker)
    _write(status, _PID.pack(pid))
    wait_status, cpu = _watch(pid, ctl)
    _write(status, _EXIT.pack(wait_status, cpu))


def _watch(pid: int, ctl: int) -> tuple[int, float]:
    """Until the jailed process ends or the parent asks (or dies): then its status and CPU."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(ctl, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if ctl in ready:
            # It has not been reaped, so the pid is still this process's: safe to signal.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if ready:
            break
    _, wait_status, usage = os.wait4(pid, 0)
    os.close(pidfd)
    return wait_status, usage.ru_utime + usage.ru_stime


def _run_jailed(to_child: int, from_child: int, broker: int, plan: dict[str, Any],
                namespaces_failed: str | None, cgroup_failed: str | None) -> None:
    from . import _jail, _net
    from ._child import _child_main
    from ._wire import _dumps, _frame, _write_all

    try:
        layers = _jail.enter_jail(plan, namespaces_failed, cgroup_failed)
    except _jail.JailRefused as refused:
        _write_all(from_child, _frame(_dumps(("jail_refused", refused.layer, refused.reason))))
        os._exit(2)
    except BaseException as exc:
        _write_all(from_child, _frame(_dumps(("jail_refused", "setup", repr(exc)[:500]))))
        os._exit(2)
    if plan["network"]:
        _net.install(broker, plan["network"])
    else:
        os.close(broker)
    _child_main(to_child, from_child, layers)
    os._exit(0)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, data)


# -- in the parent ------------------------------------------------------------------------


class Spawned:
    """The parent's ends of one child's pipes (data both ways, control, status) and of its
    network broker's socket pair."""

    def __init__(self, read_fd: int, write_fd: int, ctl_fd: int, status_fd: int,
                 broker: socket.socket) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.ctl_fd = ctl_fd
        self.status_fd = status_fd
        self.broker = broker


class Template:
    """A started template process; ``spawn`` asks it for one more child. Thread-safe.

    ``env`` is the template's (and so every child's) whole environment.
    ``close()`` stops the template; children already forked live on until
    their own parent side stops them.
    """

    def __init__(self, python: str, env: dict[str, str], stderr: Any) -> None:
        parent_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(__file__).resolve().parents[2])
        bootstrap = (f"import sys; sys.path.insert(0, {root!r}); "
                     "from guardrails.sandbox._warm import template_main; "
                     f"template_main({template_end.fileno()})")
        try:
            self.process = subprocess.Popen(
                [python, "-c", bootstrap], env=env, stdin=subprocess.DEVNULL,
                stdout=stderr, stderr=stderr, pass_fds=(template_end.fileno(),),
                close_fds=True, start_new_session=True, cwd="/")
        except BaseException:
            parent_end.close()
            raise
        finally:
            template_end.close()
        self._socket = parent_end
        self._lock = threading.Lock()
        self._owner = os.getpid()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def preload(self, modules: frozenset[str]) -> None:
        """Have the template import ``modules`` (best effort: a failure shows at start-up)."""
        self._send({"op": "preload", "modules": sorted(modules), "sys_path": list(sys.path)},
                   [])

    def spawn(self, plan: dict[str, Any]) -> Spawned:
        """Fork one jailed child; raises ``ConfigError`` when the template is gone."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        status_r, status_w = os.pipe()
        broker, broker_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours = (from_child_r, to_child_w, ctl_w, status_r)
        theirs = [to_child_r, from_child_w, ctl_r, status_w, broker_child.detach()]
        try:
            self._send({"op": "spawn", "plan": plan}, theirs)
        except BaseException:
            for fd in ours:
                os.close(fd)
            broker.close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return Spawned(*ours, broker)

    def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        with self._lock:
            try:
                socket.send_fds(self._socket, [pickle.dumps(message)], fds)
            except OSError as exc:
                raise ConfigError(f"the sandbox's template process is gone ({exc}); it is "
                                  "restarted with the next candidate") from None

    def close(self) -> None:
        """Stop the template and reap it. Idempotent; a no-op in a forked copy of the parent."""
        with contextlib.suppress(OSError):
            self._socket.close()
        if os.getpid() != self._owner:
            return  # the template belongs to the process that started it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
