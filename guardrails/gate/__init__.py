"""The update gate: proposals, frozen constraints, drift, static checks, human approval and the
decision rules that turn canary evidence into a verdict.

The review itself is a list of stages (``_stages``) run by one loop
(``_pipeline``). Imports ``canary``, ``stats``, ``ledger``, ``blobs``,
``sandbox`` and the shared modules; never ``guard`` or ``plugin``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
    from ._approval import (
        ApprovalPolicy,
        approve_pending,
        expire_pending,
        reject_pending,
        request_approval,
    )
    from ._checks import ReviewContext, UpdateCheck, run_update_checks
    from ._constraints import AllOf, AnyOf, FrozenConstraints, Invariant
    from ._control import (
        CONTROL_ALPHA,
        SUITE_CHANGED,
        fisher_less,
        last_suite_change,
        rule_lock,
    )
    from ._drift import DriftBudget, DriftSettings, drift_distance
    from ._outcome import finish, report, review_proposal
    from ._proposal import PatchOperation, ProposalLimits, ProposalTooLarge, UpdateProposal
    from ._review import GateSettings, Review, ReviewTarget, Stage, run_stages
    from ._rollback import ROLLBACK_STAGES, review_rollback
    from ._rules import DecisionRule, MarginRule
    from ._sequential import SequentialRule
    from ._stages import update_stages

_LAZY: dict[str, str] = {
    "ApprovalPolicy": "._approval",
    "approve_pending": "._approval",
    "expire_pending": "._approval",
    "reject_pending": "._approval",
    "request_approval": "._approval",
    "ReviewContext": "._checks",
    "UpdateCheck": "._checks",
    "run_update_checks": "._checks",
    "CONTROL_ALPHA": "._control",
    "SUITE_CHANGED": "._control",
    "fisher_less": "._control",
    "last_suite_change": "._control",
    "rule_lock": "._control",
    "AllOf": "._constraints",
    "AnyOf": "._constraints",
    "FrozenConstraints": "._constraints",
    "Invariant": "._constraints",
    "DriftBudget": "._drift",
    "DriftSettings": "._drift",
    "drift_distance": "._drift",
    "finish": "._outcome",
    "report": "._outcome",
    "review_proposal": "._outcome",
    "PatchOperation": "._proposal",
    "ProposalLimits": "._proposal",
    "ProposalTooLarge": "._proposal",
    "UpdateProposal": "._proposal",
    "GateSettings": "._review",
    "Review": "._review",
    "ReviewTarget": "._review",
    "Stage": "._review",
    "run_stages": "._review",
    "ROLLBACK_STAGES": "._rollback",
    "review_rollback": "._rollback",
    "DecisionRule": "._rules",
    "MarginRule": "._rules",
    "SequentialRule": "._sequential",
    "update_stages": "._stages",
}
"""Where each lazily loaded name lives (module relative to this package)."""

__all__ = [
    "AllOf",
    "AnyOf",
    "ApprovalPolicy",
    "CONTROL_ALPHA",
    "DecisionRule",
    "DriftBudget",
    "DriftSettings",
    "FrozenConstraints",
    "GateSettings",
    "Invariant",
    "MarginRule",
    "PatchOperation",
    "ProposalLimits",
    "ProposalTooLarge",
    "ROLLBACK_STAGES",
    "Review",
    "ReviewContext",
    "ReviewTarget",
    "SUITE_CHANGED",
    "SequentialRule",
    "Stage",
    "UpdateCheck",
    "UpdateProposal",
    "approve_pending",
    "drift_distance",
    "expire_pending",
    "finish",
    "fisher_less",
    "last_suite_change",
    "reject_pending",
    "report",
    "request_approval",
    "review_proposal",
    "review_rollback",
    "rule_lock",
    "run_stages",
    "run_update_checks",
    "update_stages",
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
