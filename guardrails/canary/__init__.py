"""The canary engine: cases and checkers, suites, the evidence a run produces and the runner.

The runner calls candidate and incumbent on the same sampled cases, concurrently,
retried and timed out, in this process or on a Dask (``_backends``) or Ray (``_ray``)
cluster, and
hands ``CanaryEvidence`` (ids only, never content) to the gate's decision rule.
Imports the top-level shared modules only (and ``blobs`` on a cluster's worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
    from ._backends import (
        Caller,
        ClusterSettings,
        DaskBackend,
        DaskSettings,
        EvaluationBackend,
        LocalBackend,
    )
    from ._evidence import SEQUENTIAL_STOP, SMOKE_STOP, CanaryEvidence, CaseOutcome
    from ._ray import RayBackend, RaySettings
    from ._runner import Progress, RunSettings, backend_for, gaming_p_value, run_canaries_async
    from ._suite import (
        EMPTY_OUTPUT,
        CanaryCase,
        CanarySuite,
        Checker,
        CheckerFailed,
        Contains,
        Equals,
        NotContains,
        NumericTolerance,
        Predicate,
        Regex,
        Scorer,
    )

_LAZY: dict[str, str] = {
    "Caller": "._backends",
    "DaskBackend": "._backends",
    "DaskSettings": "._backends",
    "EvaluationBackend": "._backends",
    "LocalBackend": "._backends",
    "ClusterSettings": "._backends",
    "RayBackend": "._ray",
    "RaySettings": "._ray",
    "SEQUENTIAL_STOP": "._evidence",
    "SMOKE_STOP": "._evidence",
    "CanaryEvidence": "._evidence",
    "CaseOutcome": "._evidence",
    "Progress": "._runner",
    "RunSettings": "._runner",
    "backend_for": "._runner",
    "gaming_p_value": "._runner",
    "run_canaries_async": "._runner",
    "EMPTY_OUTPUT": "._suite",
    "CanaryCase": "._suite",
    "CanarySuite": "._suite",
    "Checker": "._suite",
    "CheckerFailed": "._suite",
    "Contains": "._suite",
    "Equals": "._suite",
    "NotContains": "._suite",
    "NumericTolerance": "._suite",
    "Predicate": "._suite",
    "Regex": "._suite",
    "Scorer": "._suite",
}
"""Where each lazily loaded name lives (module relative to this package)."""

__all__ = [
    "CanaryCase",
    "Caller",
    "CanaryEvidence",
    "CanarySuite",
    "CaseOutcome",
    "Checker",
    "CheckerFailed",
    "ClusterSettings",
    "Contains",
    "DaskBackend",
    "DaskSettings",
    "EMPTY_OUTPUT",
    "Equals",
    "EvaluationBackend",
    "LocalBackend",
    "NotContains",
    "NumericTolerance",
    "Predicate",
    "Progress",
    "RayBackend",
    "RaySettings",
    "Regex",
    "RunSettings",
    "SEQUENTIAL_STOP",
    "SMOKE_STOP",
    "Scorer",
    "backend_for",
    "gaming_p_value",
    "run_canaries_async",
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
