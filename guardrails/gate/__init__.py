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
from ._drift import drift_distance
from ._proposal import PatchOperation, ProposalLimits, ProposalTooLarge, UpdateProposal
from ._rules import DecisionRule, MarginRule
from ._sequential import SequentialRule

__all__ = [
    "AllOf",
    "AnyOf",
    "ApprovalPolicy",
    "DecisionRule",
    "FrozenConstraints",
    "Invariant",
    "MarginRule",
    "PatchOperation",
    "ProposalLimits",
    "ProposalTooLarge",
    "ReviewContext",
    "SequentialRule",
    "UpdateCheck",
    "UpdateProposal",
    "approve_pending",
    "drift_distance",
    "expire_pending",
    "reject_pending",
    "request_approval",
    "run_update_checks",
]
