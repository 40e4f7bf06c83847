"""The canary engine: cases and checkers, suites, the evidence a run produces and the runner.

The runner calls candidate and incumbent on the same sampled cases, concurrently,
retried and timed out, in this process or on a Dask cluster (``_backends``), and
hands ``CanaryEvidence`` (ids only, never content) to the gate's decision rule.
Imports the top-level shared modules only (and ``blobs`` on a Dask worker).
"""

from ._backends import Caller, DaskBackend, DaskSettings, EvaluationBackend, LocalBackend
from ._evidence import SEQUENTIAL_STOP, SMOKE_STOP, CanaryEvidence, CaseOutcome
from ._runner import Progress, RunSettings, backend_for, gaming_p_value, run_canaries_async
from ._suite import (
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

__all__ = [
    "CanaryCase",
    "Caller",
    "CanaryEvidence",
    "CanarySuite",
    "CaseOutcome",
    "Checker",
    "CheckerFailed",
    "Contains",
    "DaskBackend",
    "DaskSettings",
    "Equals",
    "EvaluationBackend",
    "LocalBackend",
    "NotContains",
    "NumericTolerance",
    "Predicate",
    "Progress",
    "Regex",
    "RunSettings",
    "SEQUENTIAL_STOP",
    "SMOKE_STOP",
    "Scorer",
    "backend_for",
    "gaming_p_value",
    "run_canaries_async",
]
