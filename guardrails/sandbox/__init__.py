"""Where candidates run: the process sandbox (jailed child processes forked from a warm
template, under wall-time, CPU and memory limits), the jail's policy and layers, and the
findings that name the limit a candidate hit or the jail layer that was missing.

Imports only the shared modules.
"""

from ._errors import SandboxUnavailable, isolation_finding
from ._jail import LAYERS, JailPolicy, how_to_allow
from ._probe import jail_support
from ._process import ProcessSandbox, SandboxError, SandboxLimits, sandbox_finding

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
