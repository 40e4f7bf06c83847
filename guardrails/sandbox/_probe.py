"""What this machine's kernel lets a jail have: one best-effort jail, started and asked."""

from __future__ import annotations

from typing import Any

from ._jail import JailPolicy
from ._process import ProcessSandbox, SandboxLimits


class ProbeClient:
    """The smallest self-updating client: it answers ``None`` and builds itself from any state."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self._state = dict(state or {})

    def invoke(self, request: Any) -> None:
        return None

    def snapshot(self) -> dict[str, Any]:
        return dict(self._state)

    def propose_update(self) -> None:
        return None

    def with_state(self, state: dict[str, Any]) -> ProbeClient:
        return ProbeClient(state)


def jail_support() -> dict[str, Any]:
    """The layers a jail gets on this machine: ``{"layers": [...], "missing": [...]}``.

    Starts one ``best_effort`` jail (about a second, cold); an error starting
    it is reported as ``{"error": message}`` rather than raised.
    """
    sandbox = ProcessSandbox(SandboxLimits(jail=JailPolicy(isolation="best_effort", warm=False)))
    try:
        with sandbox.start(ProbeClient(), {}) as proxy:
            isolation = proxy.isolation
        return {"layers": isolation["layers"], "missing": isolation["missing"]}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        sandbox.close()
