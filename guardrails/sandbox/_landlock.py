"""Landlock through ``ctypes``: a filesystem allow-list, no TCP, and scoped signals.

Three system calls (``landlock_create_ruleset``, ``landlock_add_rule``,
``landlock_restrict_self``, the same numbers on every Linux architecture)
and two structures are all Landlock needs, so this module calls them
directly rather than depending on a binding. What a caller may rely on:
``abi()`` is the kernel's Landlock ABI (0 when it has none), and
``restrict(...)`` either confines the calling thread for good (and every
process it forks) or raises ``OSError`` naming what the kernel refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = (1 << 8, 1 << 9, 1 << 10,
                                                            1 << 11, 1 << 12)
_REFER, TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | _IOCTL_DEV
"""The only rights a rule on a file (not a directory) may carry."""
READ = READ_FILE | READ_DIR
SCRATCH = (WRITE_FILE | READ_FILE | READ_DIR | _REMOVE_DIR | _REMOVE_FILE | _MAKE_DIR
           | _MAKE_REG | _MAKE_SYM | _MAKE_FIFO | _REFER | TRUNCATE)
"""Everything in the scratch directory except executing, device nodes and sockets."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _call(number: int, *args: object) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)


def abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    try:
        return _call(_CREATE_RULESET, None, ctypes.c_size_t(0),
                     ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def _fs_rights(version: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if version >= 2:
        rights |= _REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= _IOCTL_DEV
    return rights


def restrict(read: Iterable[str], write: Iterable[str], devices: Iterable[str], *,
             tcp_ports: Iterable[int] = (), need_net: bool = True,
             need_scope: bool = True) -> tuple[str, ...]:
    """Confine this thread: read-only ``read``, read-write ``write``, ``devices`` as files.

    Every other path is neither readable nor writable; no TCP ``bind``, and
    ``connect`` only to ``tcp_ports``; no signals or abstract UNIX sockets to
    processes outside the domain. Paths that do not exist are skipped.
    Returns the Landlock layers in force (``"landlock_fs"``,
    ``"landlock_tcp"``, ``"landlock_scope"``). Raises ``OSError`` when the
    kernel has no Landlock, or lacks a layer that ``need_net`` /
    ``need_scope`` asks for.
    """
    version = abi()
    if version < 1:
        raise OSError(errno.EOPNOTSUPP, "the kernel has no Landlock (or it is disabled)")
    if need_net and version < 4:
        raise OSError(errno.EOPNOTSUPP, f"Landlock ABI {version} has no TCP rules (needs 4)")
    if need_scope and version < 6:
        raise OSError(errno.EOPNOTSUPP, f"Landlock ABI {version} has no signal scoping (needs 6)")
    fs = _fs_rights(version)
    attr = _RulesetAttr(fs, (_BIND_TCP | CONNECT_TCP) if version >= 4 else 0,
                        (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if version >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if version >= 6 else (
        16 if version >= 4 else 8)
    ruleset = _call(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for paths, rights in ((read, READ), (write, SCRATCH & fs),
                              (devices, READ_FILE | WRITE_FILE)):
            for path in paths:
                _add_path(ruleset, path, rights & fs)
        for port in tcp_ports if version >= 4 else ():
            rule = _NetPort(CONNECT_TCP, port)
            _call(_ADD_RULE, ruleset, ctypes.c_int(_RULE_NET_PORT), ctypes.byref(rule),
                  ctypes.c_uint32(0))
        _call(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    layers = ["landlock_fs"]
    if version >= 4:
        layers.append("landlock_tcp")
    if version >= 6:
        layers.append("landlock_scope")
    return tuple(layers)


def _add_path(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS
        rule = _PathBeneath(rights, fd)
        _call(_ADD_RULE, ruleset, ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(rule),
              ctypes.c_uint32(0))
    finally:
        os.close(fd)
