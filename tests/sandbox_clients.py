"""Clients for the process-sandbox tests, importable by the sandbox child.

They live in a module, not in the test file, because the child is a fresh
interpreter that unpickles them by module name; pytest puts tests/ on
sys.path and the sandbox forwards sys.path to the child.

``ScriptedClient`` answers like ``DictClient`` (``state["answers"]``) until
its state or the request asks for a misbehaviour: ``state["mode"]`` applies to
every request (a bad update), otherwise a request whose input names a mode
(``"hang"``, ``"exit"`` ...) triggers it for that call only.
"""

from __future__ import annotations

import copy
import ctypes
import os
import pickle
import time
from typing import Any

from guardrails import Request
from guardrails.sandbox._process import _frame

MODES = ("answer", "structured", "hang", "exit", "segfault", "allocate", "burn", "raise",
         "unplain", "forge", "huge", "fds", "spawn", "pid", "slow", "environ", "leave", "find")
_LEFT_BEHIND: list[str] = []
"""What the ``leave`` request put in this process's memory (``find`` looks for it)."""


def _touch(request: str) -> str:
    """``read:PATH`` returns the file's text, ``write:PATH`` writes it; or the error's name."""
    verb, path = request.split(":", 1)
    try:
        if verb == "read":
            with open(path) as handle:
                return handle.read()
        with open(path, "w") as handle:
            handle.write("written")
        return "written"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


_IDENTITY: list[str] = []


def _identity() -> str:
    """A token drawn once per process: tells sandbox children apart (each is PID 1 of its own
    PID namespace, so their pids all read 1)."""
    if not _IDENTITY:
        _IDENTITY.append(os.urandom(8).hex())
    return _IDENTITY[0]


class _Evil:
    """Pickles as a call to ``os.getpid``: the parent must never run it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.getpid, ())


def _forge_reply() -> None:
    """Write a reply that would run code if the parent unpickled it normally."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            import fcntl

            writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        except OSError:
            continue
        if target.startswith("pipe:") and writable:
            os.write(fd, _frame(pickle.dumps(("ok", _Evil()))))


class ScriptedClient:
    """A self-updating client whose (mis)behaviour is scripted by its state or the request."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = copy.deepcopy(state)

    def invoke(self, request: Request) -> Any:
        if isinstance(request.input, str) and request.input.startswith(("read:", "write:")):
            return _touch(request.input)
        mode = self._state.get("mode")
        if mode is None:
            mode = request.input if request.input in MODES else "answer"
        if mode == "answer":
            return self._state.get("answers", {}).get(str(request.input), self._state.get("default"))
        if mode == "structured":
            return {"input": request.input, "pair": (1, 2.5), "raw": b"\x00\x01", "tags": {"a"},
                    "z": complex(1, -1), "none": None, "flag": True}
        if mode == "hang":
            while True:
                time.sleep(1)
        if mode == "exit":
            os._exit(3)
        if mode == "segfault":
            ctypes.string_at(0)
        if mode == "allocate":
            hoard = []
            while True:
                hoard.append(bytearray(16 * 1024 * 1024))
        if mode == "burn":
            while True:
                pass
        if mode == "raise":
            raise ValueError(f"no answer for the secret input {request.input!r}")
        if mode == "unplain":
            return object()
        if mode == "forge":
            _forge_reply()
            while True:
                time.sleep(1)
        if mode == "huge":
            return "x" * 100_000
        if mode == "fds":
            return sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        if mode == "spawn":
            # Fork, not exec: the jail executes no program.
            grandchild = os.fork()
            if grandchild == 0:
                time.sleep(60)
                os._exit(0)
            return grandchild
        if mode == "pid":
            return os.getpid()
        if mode == "environ":
            return dict(os.environ)
        if mode == "leave":
            _LEFT_BEHIND.append("candidate one was here")
            with open("left-behind.txt", "w") as handle:  # in the working directory: the scratch
                handle.write("candidate one was here")
            return None
        if mode == "find":
            return {"memory": bool(_LEFT_BEHIND), "scratch": os.path.exists("left-behind.txt")}
        if mode == "slow":
            time.sleep(0.6)
            return _identity()
        raise AssertionError(f"unknown mode {mode!r}")

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def propose_update(self) -> None:
        return None

    def with_state(self, state: dict[str, Any]) -> ScriptedClient:
        build = state.get("build")
        if build == "raise":
            raise ValueError("this state cannot be built")
        if build == "hang":
            while True:
                time.sleep(1)
        return ScriptedClient(state)


def _load_slowly(state: dict[str, Any], delay: float) -> SlowLoadingClient:
    time.sleep(delay)
    return SlowLoadingClient(state, delay)


class SlowLoadingClient(ScriptedClient):
    """Takes ``delay`` seconds to unpickle: start-up is slow, answers are fast."""

    def __init__(self, state: dict[str, Any], delay: float) -> None:
        super().__init__(state)
        self.delay = delay

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_slowly, (self._state, self.delay))
