"""One review in flight, the narrow interfaces it sees, and the loop that runs its stages.

A stage is ``stage(review) -> Decision | None``: ``None`` means "go on", a
decision ends the review. The pipeline is a list of stages run by
``run_stages`` in order, the way the runtime chain is a list of middleware;
the loop alone opens each stage's span and takes its timing. A new stage
(staged rollout, another approval) is added by putting it in the list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._decision import Decision, Finding, Verdict
from .._telemetry import SPAN_STAGE_PREFIX, Telemetry
from ..blobs import BlobStore
from ..canary import CanaryEvidence, CanarySuite, Progress, RunSettings
from ..ledger import Ledger, PendingApproval
from ..sandbox import ProcessSandbox
from ._approval import ApprovalPolicy
from ._checks import UpdateCheck
from ._constraints import FrozenConstraints
from ._proposal import ProposalLimits, UpdateProposal
from ._rules import DecisionRule


class GateSettings(Protocol):
    """What the stages read of the guard: its frozen settings and its wiring (a ``Guard``)."""

    constraints: FrozenConstraints
    canaries: CanarySuite
    ledger: Ledger
    blob_store: BlobStore | None
    decision_rule: DecisionRule
    checks: tuple[UpdateCheck, ...]
    approval: ApprovalPolicy | None
    canary_run: RunSettings
    seed: int | None
    process_sandbox: ProcessSandbox | None
    case_timeout: float
    proposal_limits: ProposalLimits
    telemetry: Telemetry

    def integrity_problem(self) -> str | None: ...


class ReviewTarget(Protocol):
    """What a review may do to the guarded client: no more (a ``GuardedClient``).

    It reads the incumbent, follows the ledger, checks the incumbent for a
    silent change, rebuilds a recorded version in process, and swaps in a
    promoted client; it never reaches the runtime chain or the client's own
    update methods.
    """

    @property
    def version(self) -> str:
        """The served version."""

    @property
    def client(self) -> Any:
        """The incumbent client now serving."""

    @property
    def blocked(self) -> bool:
        """Whether calls are blocked after a silent change that could not be undone."""

    def sync(self) -> bool: ...

    def check_integrity(self) -> Finding | None: ...

    def rebuild(self, version: str) -> Any: ...

    def swap(self, client: Any, version: str, decision: Decision) -> None: ...


@dataclass
class Review:
    """The state of one review as its stages fill it in; lives for one ``propose`` call."""

    settings: GateSettings
    target: ReviewTarget
    proposal: Any
    """The proposal as given; ``UpdateProposal`` once the validate stage has run."""
    progress: Progress | None = None
    ids: dict[str, Any] = field(default_factory=dict)
    """The proposal's identity fields, passed to every ``Decision`` the review makes."""
    parent_version: str = ""
    parent_client: Any = None
    parent_state: dict[str, Any] = field(default_factory=dict)
    candidate_state: dict[str, Any] = field(default_factory=dict)
    candidate: str = ""
    findings: list[Finding] = field(default_factory=list)
    candidate_client: Any = None
    sandboxed: Any = None
    """The process-sandbox proxy of the candidate, when it runs in a child process."""
    evidence: CanaryEvidence | None = None
    verdict: Verdict | None = None
    pending: PendingApproval | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def valid_proposal(self) -> UpdateProposal:
        """The validated proposal (only after the validate stage)."""
        if not isinstance(self.proposal, UpdateProposal):
            raise TypeError("the proposal has not been validated yet")
        return self.proposal

    def reject(self, *findings: Finding) -> Decision:
        """A rejection carrying the findings so far, then ``findings`` (failed ones first)."""
        every = [*self.findings, *findings]
        return Decision.reject(sorted(every, key=lambda f: f.passed), **self.ids)

    def error(self, check: str, message: str) -> Decision:
        """The gate could not finish: an ``error`` decision with the findings so far."""
        return Decision.error(check, message, findings=self.findings, **self.ids)


Stage = Callable[[Review], Decision | None]
"""One step of the update path: ``None`` goes on, a ``Decision`` ends the review."""


def stage_name(stage: Stage) -> str:
    """The stage's span and timing name: its ``name`` attribute, else its function name."""
    return str(getattr(stage, "name", getattr(stage, "__name__", type(stage).__name__)))


def run_stages(stages: Sequence[Stage], review: Review) -> Decision:
    """Run ``stages`` in order until one decides; each in its own span, each timed.

    Cleanups registered by the stages run whatever happens. A list that ends
    without a decision is a gate error, never an acceptance.
    """
    telemetry = review.settings.telemetry
    try:
        for stage in stages:
            name = stage_name(stage)
            started = time.perf_counter()
            with telemetry.span(SPAN_STAGE_PREFIX + name):
                decision = stage(review)
            review.timings[name] = time.perf_counter() - started
            if decision is not None:
                return decision
    finally:
        for cleanup in reversed(review.cleanups):
            cleanup()
    return review.error("gate", "the review's stages ended without a decision")
