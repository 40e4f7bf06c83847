"""Runtime guardrails for self-updating models.

Wrap a model client that changes itself; every call passes a middleware
chain, every change it proposes passes frozen constraints and canary
evaluation against the serving version, and every decision is recorded in a
hash-chained ledger.
"""

from ._approval import ApprovalPolicy, approve_pending, expire_pending, reject_pending
from ._blobs import BlobStore, FileBlobStore, MemoryBlobStore, blob_digest, blob_ref, iter_blob_refs
from ._canary import (
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
from ._canonical import canonical_json, state_version
from ._chain import AsyncMiddleware, Middleware
from ._checkpoint import Checkpoint, SigningKey, VerifierKey
from ._checks import ReviewContext, UpdateCheck
from ._client import SelfUpdatingClient
from ._constraints import AllOf, AnyOf, FrozenConstraints, Invariant
from ._decision import Decision, Finding, Verdict
from ._drift import drift_distance
from ._errors import ConfigError, GuardrailsError, GuardrailViolation, LedgerIntegrityError
from ._gate import CanaryEvidence, CaseOutcome, DecisionRule, MarginRule
from ._guard import Guard, GuardedClient
from ._ledger import (
    Ledger,
    LedgerEntry,
    LedgerReport,
    MemoryLedger,
    PendingApproval,
    SQLiteLedger,
)
from ._merkle import ConsistencyProof, InclusionProof
from ._messages import Request, Response
from ._plugins import (
    PLUGIN_GROUP,
    Plugin,
    PluginError,
    PluginInfo,
    PluginParts,
    PluginSettings,
    RuntimePolicySettings,
    apply_on_error,
    installed_plugins,
    load_plugin,
    merge_parts,
)
from ._postgres import PostgresLedger
from ._proposal import PatchOperation, ProposalLimits, ProposalTooLarge, UpdateProposal
from ._runner import RunSettings
from ._sandbox import ProcessSandbox, SandboxLimits
from ._stats_rule import SequentialRule

__version__ = "0.1.0"

__all__ = [
    "AllOf",
    "AnyOf",
    "ApprovalPolicy",
    "AsyncMiddleware",
    "BlobStore",
    "CanaryCase",
    "CanaryEvidence",
    "CanarySuite",
    "CaseOutcome",
    "Checker",
    "CheckerFailed",
    "Checkpoint",
    "ConfigError",
    "ConsistencyProof",
    "Contains",
    "Decision",
    "DecisionRule",
    "Equals",
    "FileBlobStore",
    "Finding",
    "FrozenConstraints",
    "Guard",
    "GuardedClient",
    "GuardrailViolation",
    "GuardrailsError",
    "InclusionProof",
    "Invariant",
    "Ledger",
    "LedgerEntry",
    "LedgerIntegrityError",
    "LedgerReport",
    "MarginRule",
    "MemoryBlobStore",
    "MemoryLedger",
    "Middleware",
    "NotContains",
    "NumericTolerance",
    "PLUGIN_GROUP",
    "PatchOperation",
    "PendingApproval",
    "Plugin",
    "PluginError",
    "PluginInfo",
    "PluginParts",
    "PluginSettings",
    "PostgresLedger",
    "Predicate",
    "ProcessSandbox",
    "ProposalLimits",
    "ProposalTooLarge",
    "Regex",
    "Request",
    "Response",
    "ReviewContext",
    "RunSettings",
    "RuntimePolicySettings",
    "SQLiteLedger",
    "SandboxLimits",
    "Scorer",
    "SelfUpdatingClient",
    "SequentialRule",
    "SigningKey",
    "UpdateCheck",
    "UpdateProposal",
    "Verdict",
    "VerifierKey",
    "apply_on_error",
    "approve_pending",
    "blob_digest",
    "blob_ref",
    "canonical_json",
    "drift_distance",
    "expire_pending",
    "installed_plugins",
    "iter_blob_refs",
    "load_plugin",
    "merge_parts",
    "reject_pending",
    "state_version",
]
