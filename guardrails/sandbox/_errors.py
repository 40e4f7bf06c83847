"""The process sandbox's limits and the typed errors that name the limit a candidate hit."""

from __future__ import annotations

import signal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .._decision import Finding
from .._errors import ConfigError, GuardrailsError
from ._jail import JailPolicy, how_to_allow

SandboxLimit = Literal["memory", "cpu_time", "wall_time", "startup", "output_size"]
"""The limits a ``SandboxLimitExceeded`` can name."""

ChildOutput = Literal["discard", "inherit"]

_MiB = 1024 * 1024
_TRANSIENT = frozenset({"TimeoutError", "ConnectionError", "ConnectionResetError",
                        "ConnectionRefusedError", "ConnectionAbortedError", "BrokenPipeError"})

_DURING = {
    "start": "during start-up",
    "build": "while building the candidate",
    "invoke": "while answering a request",
    "snapshot": "while taking a snapshot",
}


class SandboxLimits(BaseModel):
    """The limits a sandboxed candidate runs under. Frozen; part of the guard's policy.

    ``wall_time``: seconds per call (building the candidate, each ``invoke``,
    each ``snapshot``), counted from when the call is sent to a ready child;
    the parent kills the sandbox when it runs out.
    ``cpu_time``: CPU seconds each child may use, in all, once the client is
    loaded (start-up imports are not counted); ``RLIMIT_CPU`` counts whole
    seconds, so the candidate gets between ``cpu_time`` and one second more.
    ``memory``: bytes of address space for each child (``RLIMIT_AS``), in
    force from when the client is loaded, before the candidate is built; a
    limit below what the loaded client already maps is a ``ConfigError``.
    ``startup``: seconds for the child to start, import and unpickle the client
    (the serving code, trusted: it loads before the limits are set).
    ``max_output``: bytes of the largest reply the child may send.
    ``jail``: the filesystem, network, process and system-call jail
    (``JailPolicy``); part of the limits so the guard fingerprints it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    wall_time: float = Field(default=10.0, gt=0)
    cpu_time: float = Field(default=60.0, gt=0)
    memory: int = Field(default=2048 * _MiB, gt=0)
    startup: float = Field(default=30.0, gt=0)
    max_output: int = Field(default=64 * _MiB, gt=0)
    jail: JailPolicy = JailPolicy()
    """How strongly each child is jailed (``JailPolicy``: strict by default)."""



# -- errors -----------------------------------------------------------------------


class SandboxError(GuardrailsError):
    """Base class of every error the process sandbox raises.

    ``during`` says what the child was doing (``"during start-up"``,
    ``"while answering a request"`` ...). ``evidence()`` is a JSON dict for a
    ``Finding``; neither contains request or output content.
    """

    def __init__(self, message: str, *, during: str) -> None:
        super().__init__(message)
        self.during = during

    def evidence(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "during": self.during}


class SandboxLimitExceeded(SandboxError):
    """The candidate hit ``limit``; the child has been killed.

    ``configured`` is the limit's value (seconds or bytes, as in ``SandboxLimits``).
    """

    def __init__(self, limit: SandboxLimit, configured: float, *, during: str,
                 detail: str = "") -> None:
        who = "the sandbox" if limit == "startup" else "the sandboxed candidate"
        super().__init__(
            f"{who} hit the {limit} limit ({_describe(limit, configured)}) {during}"
            + (f": {detail}" if detail else "") + "; the sandbox was stopped",
            during=during)
        self.limit: SandboxLimit = limit
        self.configured = configured

    def evidence(self) -> dict[str, Any]:
        return {**super().evidence(), "limit": self.limit, "configured": self.configured}


class SandboxCrashed(SandboxError):
    """The child died (or broke the protocol) without hitting a known limit.

    ``exitcode`` is set when it exited, ``signal`` (a number) when a signal
    killed it; both are ``None`` when the parent stopped a child that sent
    malformed replies or closed its pipe.
    """

    def __init__(self, message: str, *, during: str, exitcode: int | None = None,
                 signal: int | None = None) -> None:
        super().__init__(message, during=during)
        self.exitcode = exitcode
        self.signal = signal

    @property
    def signal_name(self) -> str | None:
        return _signal_name(self.signal) if self.signal is not None else None

    def evidence(self) -> dict[str, Any]:
        return {**super().evidence(), "exitcode": self.exitcode, "signal": self.signal_name}


class SandboxCallError(SandboxError):
    """The candidate raised an ordinary exception; the sandbox stays usable.

    ``type_name`` is the exception's class name. ``detail`` is its message as
    the candidate wrote it: it may quote the request, so it is kept out of
    ``str(error)`` and ``evidence()``; do not log it for hidden cases.
    ``transient`` is true for ``TimeoutError`` and the connection errors.
    """

    def __init__(self, type_name: str, detail: str, *, during: str) -> None:
        super().__init__(f"the sandboxed candidate raised {type_name} {during}", during=during)
        self.type_name = type_name
        self.detail = detail
        # The canary runner retries errors marked transient: the child's own timeouts and
        # connection errors keep that meaning across the process boundary.
        self.transient = type_name in _TRANSIENT

    def evidence(self) -> dict[str, Any]:
        return {**super().evidence(), "raised": self.type_name}


def sandbox_finding(error: SandboxError, *, check: str = "sandbox") -> Finding:
    """A failed ``Finding`` for ``error``: its message, and evidence naming the limit or signal."""
    return Finding(check=check, passed=False, message=str(error), evidence=error.evidence())


def isolation_finding(isolation: dict[str, Any]) -> Finding:
    """A passed ``isolation`` finding recording the jail a candidate ran in (mode, layers).

    ``isolation`` is ``SandboxedClient.isolation``; the evidence is that dict,
    so every decision's ledger entry says how strong its jail was.
    """
    missing = isolation.get("missing") or []
    message = (f"the candidate ran in a {isolation['mode']} jail with "
               f"{len(isolation['layers'])} layers"
               + (f"; missing: {', '.join(missing)}" if missing else "; none missing"))
    return Finding(check="isolation", passed=True, message=message, evidence=dict(isolation))


def _describe(limit: SandboxLimit, configured: float) -> str:
    if limit in ("memory", "output_size"):
        return (f"{configured / _MiB:g} MiB" if configured >= _MiB and configured % _MiB == 0
                else f"{configured:g} bytes")
    if limit == "cpu_time":
        return f"{configured:g} s of CPU"
    if limit == "wall_time":
        return f"{configured:g} s per call"
    return f"{configured:g} s"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"




class SandboxUnavailable(ConfigError):
    """A strict jail could not be set up on this system: the candidate was not evaluated.

    ``layer`` names the missing layer (see ``guardrails.sandbox.LAYERS``);
    the message says how to allow it, or how to choose a weaker jail.
    """

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(
            f"the sandbox's strict jail is missing the {layer} layer ({reason[:300]}); the "
            f"candidate was not evaluated. To allow it: {how_to_allow(layer)}. Or accept a "
            "weaker jail with [sandbox] isolation = \"best_effort\" (records the missing "
            "layers) or \"off\" (resource limits only)")
        self.layer = layer
        self.reason = reason
