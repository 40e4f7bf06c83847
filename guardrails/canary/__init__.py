"""The canary engine: cases and checkers, suites, the evidence a run produces and the runner.

The runner calls candidate and incumbent on the same sampled cases, concurrently,
retried and timed out, and hands ``CanaryEvidence`` (ids only, never content) to
the gate's decision rule. Imports the top-level shared modules only.
"""

from ._evidence import SEQUENTIAL_STOP, SMOKE_STOP, CanaryEvidence, CaseOutcome
from ._runner import Progress, RunSettings, gaming_p_value, run_canaries_async
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
    "CanaryEvidence",
    "CanarySuite",
    "CaseOutcome",
    "Checker",
    "CheckerFailed",
    "Contains",
    "Equals",
    "NotContains",
    "NumericTolerance",
    "Predicate",
    "Progress",
    "Regex",
    "RunSettings",
    "SEQUENTIAL_STOP",
    "SMOKE_STOP",
    "Scorer",
    "gaming_p_value",
    "run_canaries_async",
]
