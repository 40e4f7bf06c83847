"""Where candidates run: the process sandbox (jailed child processes forked from a warm
template, under wall-time, CPU and memory limits), the jail's policy and layers, and the
findings that name the limit a candidate hit or the jail layer that was missing.

Imports only the shared modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
    from ._errors import SandboxUnavailable, isolation_finding
    from ._jail import LAYERS, JailPolicy, how_to_allow
    from ._probe import jail_support
    from ._process import ProcessSandbox, SandboxError, SandboxLimits, sandbox_finding

_LAZY: dict[str, str] = {
    "SandboxUnavailable": "._errors",
    "isolation_finding": "._errors",
    "LAYERS": "._jail",
    "JailPolicy": "._jail",
    "how_to_allow": "._jail",
    "jail_support": "._probe",
    "ProcessSandbox": "._process",
    "SandboxError": "._process",
    "SandboxLimits": "._process",
    "sandbox_finding": "._process",
}
"""Where each lazily loaded name lives (module relative to this package)."""

__all__ = [
    "LAYERS",
    "JailPolicy",
    "ProcessSandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "how_to_allow",
    "isolation_finding",
    "jail_support",
    "sandbox_finding",
]


def __getattr__(name: str) -> Any:
    # PEP 562: a name's module is imported on first use, so importing this package costs
    # only what is used.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
