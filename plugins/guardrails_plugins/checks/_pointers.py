"""JSON Pointer (RFC 6901) helpers shared by the update-gate plugins."""

from __future__ import annotations

from typing import Any

import jsonpointer

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()
"""Sentinel for a pointer that resolves to nothing."""


def check_pointer(pointer: str) -> str:
    """``pointer`` if it is a JSON Pointer, else ``ValueError`` saying how to write one."""
    try:
        jsonpointer.JsonPointer(pointer)
    except jsonpointer.JsonPointerException as exc:
        raise ValueError(f"{pointer!r} is not a JSON Pointer (RFC 6901): {exc}; write '/key/0', "
                         "escaping '~' as '~0' and '/' as '~1'") from None
    return pointer


def resolve(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``document``, or ``MISSING``."""
    return jsonpointer.resolve_pointer(document, pointer, MISSING)
