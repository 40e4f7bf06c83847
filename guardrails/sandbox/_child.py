"""The sandbox child's side: load the client, set the limits, answer calls until told to stop.

Runs in the jailed process (see ``_jail``); only the parent's side
(``_process``) starts it.
"""

from __future__ import annotations

import math
import os
import pickle
import sys
from typing import Any

from .._client import whole_answerer
from ._wire import _HEADER, _dumps, _frame, _loads_plain, _read_exact, _write_all

_MiB = 1024 * 1024
_RESERVE = _MiB
_EMERGENCY: list[bytearray] = []
"""In the child: memory held back so it can still report a ``MemoryError``."""
_TEXT_LIMIT = 2000

def _child_main(read_fd: int, write_fd: int, layers: tuple[str, ...] = ()) -> None:
    """Entry point of the jailed sandbox child (``layers``: the jail's layers in force)."""
    _EMERGENCY.append(bytearray(_RESERVE))

    def send(*reply: Any) -> None:
        _write_all(write_fd, _frame(_dumps(reply)))

    def receive() -> Any:
        header = _read_exact(read_fd, _HEADER.size)
        body = None if header is None else _read_exact(read_fd, _HEADER.unpack(header)[0])
        if body is None:
            os._exit(0)  # the parent is gone or closed the sandbox
        return pickle.loads(body)  # from the trusted parent

    client, cpu_soft = _load(receive(), send)
    send("ready", cpu_soft, layers)
    _serve(client, receive, write_fd)


def _load(init: dict[str, Any], send: Any) -> tuple[Any, int]:
    """Load the client and set the limits; on failure report why and exit."""
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
        return client, _limit_cpu(init["cpu_time"])
    except (ValueError, OSError) as exc:
        send("limits_failed", f"{type(exc).__name__}: {exc}")
        os._exit(2)


def _serve(client: Any, receive: Any, write_fd: int) -> None:
    """Answer the parent's calls, one at a time, until it closes the pipe or says ``close``."""
    candidate: Any = None
    answer: Any = None
    while True:
        op = "?"
        try:
            op, arg = receive()
            if op == "close":
                os._exit(0)  # no atexit handlers: candidate code must not delay the exit
            if op == "build":
                candidate, client = client.with_state(arg), None
                # A stream-only candidate answers with its stream consumed whole.
                answer, value = whole_answerer(candidate), None
            elif op == "invoke":
                value = answer(arg)
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


