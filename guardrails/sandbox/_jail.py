"""The jail a sandbox child enters before it loads the client: what it may see and do.

``JailPolicy`` is the frozen part of the guard's policy that says how strong
the jail must be. ``plan_jail`` (parent side) turns it into the concrete
paths and variables a child gets; ``enter_jail`` (child side, after the
fork) sets every layer up in order and returns the layers in force, or
raises ``JailRefused`` naming the first layer the kernel refused when the
policy is ``strict``.

The layers, in the order they are set up:

- ``namespaces``: new user, PID, network, mount, IPC, UTS and cgroup
  namespaces (set up by the child's supervisor before the jailed process
  is forked, so the jailed process is PID 1 of its own PID namespace: when
  it dies, everything it forked dies with it). No network interface is up:
  no TCP, UDP or ICMP to anything, loopback services of the host included.
- ``proc``: a private ``/proc`` that shows only the jail's own processes.
- ``nproc``: ``RLIMIT_NPROC`` (counted per user namespace, so it holds for
  root too: the kernel ignores it only for holders of a capability in the
  initial namespace, which the jail is not).
- ``clean_env``: only the variables the policy names, a private ``TMPDIR``.
- ``no_new_privs`` and ``capabilities`` (every capability dropped, also
  from the bounding set).
- ``landlock_fs`` / ``landlock_tcp`` / ``landlock_scope``: read-only the
  interpreter, the imported code and ``read_paths``; read-write the private
  scratch directory; nothing else, no program may be executed, no TCP
  connect or bind, no signal to a process outside the jail.
- ``seccomp``: the calls that break out of or reach around a jail fail with
  ``EPERM``: mount and friends, namespaces, ``ptrace`` and
  ``process_vm_*``, ``bpf``, kernel keyrings, module and ``kexec`` loading,
  ``io_uring``, ``userfaultfd``, ``perf_event_open`` and ``AF_UNIX``
  sockets (which would reach the host's UNIX sockets by path).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import _landlock
from ._net import split_endpoint

Isolation = Literal["strict", "best_effort", "off"]

LAYERS = ("namespaces", "proc", "nproc", "clean_env", "no_new_privs", "capabilities",
          "landlock_fs", "landlock_tcp", "landlock_scope", "seccomp")
"""Every layer a jail can have, in the order they are set up."""

_HOW_TO_ALLOW = {
    "namespaces": ("unprivileged user namespaces must be allowed (sysctl "
                   "user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1, and on "
                   "Ubuntu kernel.apparmor_restrict_unprivileged_userns = 0); in a container, "
                   "run it with a seccomp profile that allows unshare and clone"),
    "proc": "the container must leave /proc unmasked so a PID namespace can mount its own",
    "landlock_fs": ("the kernel needs Landlock (Linux 5.13 or later with lsm=...,landlock on "
                    "the kernel command line)"),
    "landlock_tcp": "the kernel needs Landlock ABI 4 (Linux 6.7 or later)",
    "landlock_scope": "the kernel needs Landlock ABI 6 (Linux 6.12 or later)",
    "seccomp": ("the system needs libseccomp (apt-get install libseccomp2) and a kernel with "
                "CONFIG_SECCOMP_FILTER"),
}
_DEFAULT_HOW = "this layer is needed for a strict jail"

# glibc and musl may start threads with clone3, whose flags seccomp cannot see: answering
# ENOSYS makes them fall back to clone, whose flags it can.
_DENIED = ("mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsmount",
           "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "ptrace",
           "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "bpf", "keyctl",
           "add_key", "request_key", "init_module", "finit_module", "delete_module",
           "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct",
           "open_by_handle_at", "name_to_handle_at", "userfaultfd", "perf_event_open",
           "io_uring_setup", "io_uring_enter", "io_uring_register", "quotactl", "syslog",
           "lookup_dcookie", "vhangup", "personality", "settimeofday", "clock_settime",
           "clock_adjtime", "adjtimex", "sethostname", "setdomainname")
_CLONE_NS = (0x10000000, 0x20000000, 0x40000000, 0x04000000, 0x08000000, 0x00020000,
             0x02000000, 0x00000080)
"""CLONE_NEWUSER, NEWPID, NEWNET, NEWUTS, NEWIPC, NEWNS, NEWCGROUP, NEWTIME."""
_UNSHARE_FLAGS = 0x10000000 | 0x20000000 | 0x40000000 | 0x00020000 | 0x08000000 | 0x04000000 \
    | 0x02000000
_MS_REC, _MS_PRIVATE, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x4000, 1 << 18, 2, 4, 8
_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_CAP_AMBIENT = 38, 24, 47
_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/etc/ld.so.cache", "/etc/localtime",
                "/etc/ssl", "/etc/ca-certificates", "/etc/nsswitch.conf", "/etc/hosts",
                "/etc/mime.types")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

_libc = ctypes.CDLL(None, use_errno=True)


class JailPolicy(BaseModel):
    """How strongly a sandbox child is jailed. Frozen; part of the guard's fingerprint.

    ``isolation``: ``"strict"`` (the default) refuses to evaluate a
    candidate when any layer cannot be set up, naming the layer and how to
    allow it; ``"best_effort"`` evaluates with the layers the kernel allows
    and records the missing ones; ``"off"`` is the resource jail only
    (limits, no namespaces, Landlock or seccomp): for trusted clients on
    systems without the kernel features.
    ``max_processes``: processes and threads the jail may hold at once.
    ``read_paths``: more files or directories the candidate may read (model
    weights, a tokenizer cache); never the ledger, keys or canary files.
    ``write_paths``: folders the candidate may also write (a cache shared
    between candidates, a report); never the ledger's, the keys' or the
    configuration's folder.
    ``env``: names of environment variables passed through; every other
    variable (API keys, database URLs) stays out.
    ``network``: the ``host:port`` endpoints the candidate may reach (a
    model endpoint); nothing else is reachable, loopback services included.
    Empty (the default): no network at all.
    ``warm``: fork each child from a pre-started template process (fast);
    ``False`` starts a fresh interpreter per candidate (slow, for comparison).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    isolation: Isolation = "strict"
    max_processes: int = Field(default=64, ge=4, le=4096)
    read_paths: tuple[str, ...] = ()
    write_paths: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    network: tuple[str, ...] = ()
    warm: bool = True

    @field_validator("network")
    @classmethod
    def _endpoints(cls, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        for endpoint in endpoints:
            split_endpoint(endpoint)
        return endpoints

    @field_validator("read_paths", "write_paths")
    @classmethod
    def _absolute(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not os.path.isabs(path):
                raise ValueError(f"entry {path!r} must be an absolute path")
        return paths


class JailRefused(Exception):
    """A layer of a strict jail could not be set up (raised in the child, reported as data)."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer = layer
        self.reason = reason


def how_to_allow(layer: str) -> str:
    """What to change on the system so ``layer`` can be set up."""
    return _HOW_TO_ALLOW.get(layer, _DEFAULT_HOW)


# -- the parent's side: what a child may see ---------------------------------------------


def plan_jail(policy: JailPolicy, scratch: str) -> dict[str, Any]:
    """The concrete jail for one child: paths to read, the scratch to write, the environment."""
    env = {name: os.environ[name] for name in policy.env if name in os.environ}
    env.update({"TMPDIR": scratch, "HOME": scratch, "MALLOC_ARENA_MAX": "2",
                "PYTHONDONTWRITEBYTECODE": "1"})
    return {"isolation": policy.isolation, "max_processes": policy.max_processes,
            "read": sorted(set(code_paths()) | set(_SYSTEM_READ) | set(policy.read_paths)),
            "scratch": scratch, "write": [scratch, *policy.write_paths], "env": env,
            "network": list(policy.network)}


_CODE_PATHS: dict[tuple[Any, ...], list[str]] = {}


def code_paths() -> list[str]:
    """``_code_paths()``, recomputed only when ``sys.path``, the imports or the cwd changed
    (it resolves every imported module's file: milliseconds per review otherwise)."""
    key = (tuple(sys.path), len(sys.modules), os.getcwd())
    if key not in _CODE_PATHS:
        _CODE_PATHS.clear()
        _CODE_PATHS[key] = _code_paths()
    return list(_CODE_PATHS[key])


def _code_paths() -> list[str]:
    """What the child must read to run: the interpreter and the code this process imported.

    The interpreter's prefixes (standard library, the virtual environment)
    and ``site-packages`` / ``dist-packages`` folders are granted whole.
    From any other ``sys.path`` entry (a project folder an editable install
    or the working directory put there, with its ledger, keys and canary
    files beside the code) only the top-level packages and modules this
    process imported are granted.
    """
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    whole = {os.path.realpath(p) for p in prefixes}
    paths = set(whole) | set(prefixes)
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    narrow: list[str] = []
    for entry in sys.path:
        if not entry or not os.path.exists(entry):
            continue
        real = os.path.realpath(entry)
        if (any(_contains(place, real) for place in whole)
                or os.path.basename(real) in ("site-packages", "dist-packages")):
            paths.add(real)
        else:
            narrow.append(real)
    paths.update(_imported_from(narrow))
    return sorted(paths)


def _contains(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def _imported_from(entries: list[str]) -> set[str]:
    """The top-level package directories and module files imported from ``entries``."""
    found: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        real = os.path.realpath(file)
        for entry in entries:
            if _contains(entry, real) and real != entry:
                top = real[len(entry.rstrip(os.sep)) + 1:].split(os.sep, 1)[0]
                found.add(os.path.join(entry, top))
    return found


# -- the child's side ------------------------------------------------------------------------


_PIDS_V1 = "/sys/fs/cgroup/pids"


def join_pids_cgroup(limit: int) -> tuple[str | None, str | None]:
    """Move this process into a fresh pids cgroup capped at ``limit``: ``(path, None)``.

    Needed when the jail runs as root: the kernel exempts root's user from
    ``RLIMIT_NPROC`` even inside a user namespace. Returns ``(None, why)``
    when no pids controller is writable here (cgroup v1 ``pids``).
    """
    if not os.path.isdir(_PIDS_V1):
        return None, f"no cgroup v1 pids controller at {_PIDS_V1}"
    path = os.path.join(_PIDS_V1, f"guardrails-jail-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.mkdir(path)
        Path(path, "pids.max").write_text(str(limit))
        Path(path, "cgroup.procs").write_text(str(os.getpid()))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return None, f"the pids cgroup could not be set up ({exc})"
    return path, None


def leave_pids_cgroup(path: str | None) -> None:
    """Move this process back to the root pids cgroup and remove ``path`` (best effort)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        Path(_PIDS_V1, "cgroup.procs").write_text(str(os.getpid()))
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            import time

            time.sleep(0.01)  # the jail's last processes are still being torn down


def enter_namespaces(isolation: Isolation) -> str | None:
    """In the supervisor, before forking the jailed process: new namespaces, ids mapped.

    Returns ``None`` on success, else why it failed (the jailed process
    reports it; a strict jail then refuses).
    """
    if isolation == "off":
        return "not requested"
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(_UNSHARE_FLAGS) != 0:
        code = ctypes.get_errno()
        return f"unshare refused ({errno.errorcode.get(code, code)}: {os.strerror(code)})"
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
        Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
    except OSError as exc:
        return f"mapping the user ids failed ({exc})"
    return None


def enter_jail(plan: dict[str, Any], namespaces_failed: str | None,
               pids_cgroup_failed: str | None) -> tuple[str, ...]:
    """Set every layer up in this (the jailed, single-threaded) process; return those in force.

    Raises ``JailRefused`` on the first layer that fails when
    ``plan["isolation"]`` is ``"strict"``; under ``"best_effort"`` a failed
    layer is left out of the result.
    """
    strict = plan["isolation"] == "strict"
    if plan["isolation"] == "off":
        _clean_env(plan)
        return ("clean_env",)
    layers: list[str] = []

    def layer(name: str, step: Any) -> None:
        try:
            result = step()
        except (OSError, ValueError, RuntimeError, ImportError) as exc:
            if strict:
                raise JailRefused(name, f"{type(exc).__name__}: {exc}") from None
            return
        layers.extend(result if isinstance(result, tuple) else (name,))

    if namespaces_failed is not None:
        if strict:
            raise JailRefused("namespaces", namespaces_failed)
    else:
        layers.append("namespaces")
        layer("proc", _mount_proc)
    layer("nproc", lambda: _limit_processes(plan["max_processes"], pids_cgroup_failed))
    layer("clean_env", lambda: _clean_env(plan))
    layer("no_new_privs", _no_new_privs)
    layer("capabilities", _drop_capabilities)
    # /proc is readable only when it is the jail's own (it lists no process outside).
    read = [*plan["read"], "/proc"] if "proc" in layers else plan["read"]
    layer("landlock_fs", lambda: _landlock.restrict(read, plan["write"], _DEVICES,
                                                    need_net=strict, need_scope=strict))
    layer("seccomp", _seccomp)
    return tuple(layers)


def _mount_proc() -> None:
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, kind: str | None, flags: int) -> None:
    if _libc.mount(_encode(source), _encode(target), _encode(kind), ctypes.c_ulong(flags),
                   None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {target}: {os.strerror(code)}")


def _limit_processes(limit: int, pids_cgroup_failed: str | None) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    if os.geteuid() == 0 and _host_uid() == 0 and pids_cgroup_failed is not None:
        # Root's user is exempt from RLIMIT_NPROC, so only the cgroup counts.
        raise OSError(errno.EPERM, f"running as root, and {pids_cgroup_failed}")


def _host_uid() -> int:
    """The uid this process has outside its user namespace (``/proc/self/uid_map``)."""
    try:
        fields = Path("/proc/self/uid_map").read_text().split()
        return int(fields[1]) if fields[0] == str(os.getuid()) else os.getuid()
    except (OSError, ValueError, IndexError):
        return os.getuid()


def _clean_env(plan: dict[str, Any]) -> None:
    os.environ.clear()
    os.environ.update(plan["env"])
    os.chdir(plan["scratch"])
    import tempfile

    tempfile.tempdir = plan["scratch"]


def _no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) refused")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text()) if Path(
        "/proc/sys/kernel/cap_last_cap").exists() else 40
    for cap in range(last + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != errno.EINVAL:
            raise OSError(ctypes.get_errno(), f"dropping capability {cap} from the bounding set")
    with contextlib.suppress(Exception):
        _libc.prctl(_PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset refused")


def _seccomp() -> None:
    import pyseccomp as seccomp  # type: ignore[import-untyped]  # the template preloads it

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in _DENIED:
        with contextlib.suppress(OSError, ValueError):  # a call this architecture lacks
            rules.add_rule(deny, name)
    for flag in _CLONE_NS:
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    import socket

    rules.add_rule(deny, "socket", seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX))
    rules.load()


def preload() -> None:
    """Import what ``enter_jail`` needs, so a forked child does not read it from disk."""
    import resource  # noqa: F401
    import tempfile  # noqa: F401

    with contextlib.suppress(Exception):
        import pyseccomp  # noqa: F401
