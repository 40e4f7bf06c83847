"""A candidate that tries every way out of the jail and reports what it got. Not a test module.

Module-level and picklable so the sandbox child can load it. ``Escaper`` runs
the attempts ``state["escape"]`` names (when it is built, or when asked with
the input ``"escape"``) and answers ``"escape"`` with a dict: attempt name ->
``"blocked: ErrorName ..."`` or ``"got: ..."``. Every target (paths, pids,
ports) comes from the state the test wrote: the candidate knows exactly
where the secrets are, as a hostile model would.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

from adversaries import ConfigClient

import guardrails as gr

_libc = ctypes.CDLL(None, use_errno=True)


def _attempt(action: Callable[[], Any]) -> str:
    try:
        return f"got: {str(action())[:120]}"
    except BaseException as exc:  # the report must survive anything the attempt raises
        return f"blocked: {type(exc).__name__} {exc}"[:200]


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return repr(handle.read(64))


def _write(path: str) -> str:
    with open(path, "w") as handle:
        handle.write("pwned by the candidate")
    return path


def _syscall_status(result: int) -> str:
    if result != 0:
        code = ctypes.get_errno()
        raise PermissionError(code, os.strerror(code))
    return "succeeded"


def _tcp(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"exfiltrated")
    return "connected"


def _udp(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"exfiltrated", ("127.0.0.1", port))
    return "sent"


def _unix(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b"exfiltrated")
    return "connected"


def _fork_bomb(count: int) -> str:
    """Fork ``count`` children that sleep; raise once the kernel refuses, saying how many ran."""
    started = 0
    try:
        for _ in range(count):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            started += 1
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} after {started} forks") from None
    return f"{started} forks"


def _ptrace(pid: int) -> str:
    return _syscall_status(_libc.ptrace(16, pid, None, None))  # PTRACE_ATTACH


def attempts(targets: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Every escape, by name, aimed at ``targets``."""
    parent = targets["parent_pid"]
    return {
        "read_ledger": lambda: _read(targets["ledger"]),
        "read_ledger_wal": lambda: _read(targets["ledger"] + "-wal"),
        "read_key": lambda: _read(targets["key"]),
        "read_config": lambda: _read(targets["config"]),
        "read_canaries": lambda: _read(targets["canaries"]),
        "list_parent_cwd": lambda: os.listdir(targets["cwd"]),
        "read_home": lambda: os.listdir(os.path.expanduser("~root")),
        "read_parent_environ": lambda: _read(f"/proc/{parent}/environ"),
        "secret_in_environment": lambda: os.environ[targets["secret_variable"]],
        "write_outside_scratch": lambda: _write(targets["outside"]),
        "overwrite_ledger": lambda: _write(targets["ledger"]),
        "tcp_to_loopback": lambda: _tcp(targets["tcp_port"]),
        "udp_to_loopback": lambda: _udp(targets["udp_port"]),
        "unix_socket": lambda: _unix(targets["unix_socket"]),
        "signal_parent": lambda: os.kill(parent, signal.SIGUSR1) or "signalled",
        "signal_process_group": lambda: os.killpg(os.getpgid(parent), signal.SIGUSR1)
        or "signalled",
        "ptrace_parent": lambda: _ptrace(parent),
        "run_shell": lambda: subprocess.run(["/bin/sh", "-c", "id"], capture_output=True,
                                            check=True, timeout=5).stdout,
        "mount": lambda: _syscall_status(_libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None)),
        "new_namespace": lambda: _syscall_status(_libc.unshare(0x10000000)),
        "fork_bomb": lambda: _fork_bomb(targets["forks"]),
    }


def benign(targets: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """What an honest candidate does: numpy, a temporary file in its scratch, a request to the
    endpoint it is allowed (``targets["http_port"]`` on loopback)."""

    def numpy_sum() -> str:
        import numpy

        return str(int(numpy.arange(10).sum()))

    def temp_file() -> str:
        import tempfile

        with tempfile.NamedTemporaryFile("w+", delete=True) as handle:
            handle.write("scratch")
            handle.flush()
            handle.seek(0)
            return f"{handle.name}: {handle.read()}"

    def http_get(host: str) -> str:
        import http.client

        connection = http.client.HTTPConnection(host, targets["http_port"], timeout=10)
        connection.request("GET", "/")
        body = connection.getresponse().read().decode()
        connection.close()
        return body

    return {"numpy": numpy_sum, "temp_file": temp_file,
            "http_by_name": lambda: http_get("localhost"),
            "http_by_address": lambda: http_get("127.0.0.1")}


class Escaper(ConfigClient):
    """Answers like ``DictClient``; tries ``state["escape"]`` when built, reports when asked."""

    def with_state(self, state: dict[str, Any]) -> Escaper:
        clone = type(self)(state)
        clone.report = clone.run()
        return clone

    def run(self) -> dict[str, str]:
        targets = self._state.get("escape")
        if not targets:
            return {}
        if os.getpid() != 1:
            # Not PID 1 of a jail's PID namespace: this is the test's own process (a guard
            # rebuilding an accepted state in-process). Never bomb the machine running the tests.
            return {"not_jailed": f"pid {os.getpid()}"}
        wanted = {**attempts(targets), **benign(targets)}
        return {name: _attempt(wanted[name]) for name in targets["attempts"]}

    def invoke(self, request: gr.Request) -> Any:
        if request.input == "escape":
            return getattr(self, "report", {})
        return super().invoke(request)
