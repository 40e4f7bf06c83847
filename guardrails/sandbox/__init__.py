"""Where candidates run: the process sandbox (a child process under wall-time, CPU and memory
limits) and the findings that name the limit a candidate hit.

Imports only the shared modules.
"""

from ._process import ProcessSandbox, SandboxError, SandboxLimits, sandbox_finding

__all__ = [
    "ProcessSandbox",
    "SandboxError",
    "SandboxLimits",
    "sandbox_finding",
]
