"""The update gate: proposals, frozen constraints, drift, static checks, human approval and the
decision rules that turn canary evidence into a verdict.

The review itself is a list of stages (``_stages``) run by one loop
(``_pipeline``). Imports ``canary``, ``stats``, ``ledger``, ``blobs``,
``sandbox`` and the shared modules; never ``guard`` or ``plugin``.
"""

from ._approval import (
    ApprovalPolicy,
    approve_pending,
    expire_pending,
    reject_pending,
    request_approval,
)
from ._checks import ReviewContext, UpdateCheck, run_update_checks
from ._constraints import AllOf, AnyOf, FrozenConstraints, Invariant
from ._drift import DriftBudget, DriftSettings, drift_distance
from ._outcome import finish, report, review_proposal
from ._proposal import PatchOperation, ProposalLimits, ProposalTooLarge, UpdateProposal
from ._review import GateSettings, Review, ReviewTarget, Stage, run_stages
from ._rollback import ROLLBACK_STAGES, review_rollback
from ._rules import DecisionRule, MarginRule
from ._sequential import SequentialRule
from ._stages import update_stages

__all__ = [
    "AllOf",
    "AnyOf",
    "ApprovalPolicy",
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
    "SequentialRule",
    "Stage",
    "UpdateCheck",
    "UpdateProposal",
    "approve_pending",
    "drift_distance",
    "expire_pending",
    "finish",
    "reject_pending",
    "report",
    "request_approval",
    "review_proposal",
    "review_rollback",
    "run_stages",
    "run_update_checks",
    "update_stages",
]
