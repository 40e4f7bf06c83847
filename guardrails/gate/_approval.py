"""Human approval: reviewed proposals that wait in the ledger until a person decides.

Approving or rejecting needs only the ledger, not the model: an operator's
command line resolves a pending approval in the store, and every guarded
client following that ledger serves the approved version.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .._decision import Decision, Finding, Verdict
from ..ledger import Ledger, PendingApproval

WAITING = "human_approval"


class ApprovalPolicy(BaseModel):
    """Which reviewed proposals wait for a human instead of being decided by the gate alone.

    ``kinds``: proposals of these kinds wait even when the gate accepts them.
    ``inconclusive``: every inconclusive proposal waits (otherwise it is
    simply not accepted). ``timeout``: seconds after which a waiting proposal
    is rejected (``None``: never).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: tuple[str, ...] = ()
    inconclusive: bool = True
    timeout: float | None = Field(default=86_400.0, gt=0)

    def requires_approval(self, decision: Decision) -> bool:
        """Whether a decision the gate reached should wait for a human."""
        if decision.verdict is Verdict.ACCEPTED:
            return decision.kind in self.kinds
        return decision.verdict is Verdict.INCONCLUSIVE and self.inconclusive


def request_approval(decision: Decision, proposal: dict[str, Any], policy: ApprovalPolicy,
                     now: float | None = None) -> tuple[Decision, PendingApproval]:
    """Turn a gate decision into an inconclusive one waiting for a human, and its pending record."""
    now = time.time() if now is None else now
    assert decision.proposal_id and decision.parent and decision.candidate
    waiting = decision.model_copy(update={
        "verdict": Verdict.INCONCLUSIVE,
        "findings": (*decision.findings, Finding(
            check=WAITING, passed=False,
            message=f"waiting for human approval: guardrails approve {decision.proposal_id}",
            evidence={"pending": decision.proposal_id, "gate_verdict": decision.verdict.value}))})
    pending = PendingApproval(
        id=decision.proposal_id, parent=decision.parent, candidate=decision.candidate,
        kind=decision.kind, source=decision.source, proposal=proposal,
        findings=[f.model_dump(mode="json") for f in decision.findings],
        requested_at=now, expires_at=None if policy.timeout is None else now + policy.timeout)
    return waiting, pending


def _waiting(ledger: Ledger, id_: str) -> PendingApproval:
    for pending in ledger.pending(include_resolved=True):
        if pending.id == id_:
            if pending.status != "pending":
                raise ValueError(f"approval {id_!r} was already {pending.status}")
            return pending
    raise KeyError(f"no pending approval {id_!r}; list them with 'guardrails pending'")


def _ids(pending: PendingApproval) -> dict[str, Any]:
    return {"parent": pending.parent, "candidate": pending.candidate, "proposal_id": pending.id,
            "kind": pending.kind, "source": pending.source}


def approve_pending(ledger: Ledger, id_: str, *, approver: str,
                    now: float | None = None) -> Decision:
    """Promote a waiting proposal as the new anchor, if its parent is still served.

    Raises ``KeyError`` for an unknown id and ``ValueError`` for one already
    resolved; returns a rejected decision when it expired or went stale.
    """
    expire_pending(ledger, now)
    pending = _waiting(ledger, id_)
    findings = [Finding.model_validate(f) for f in pending.findings]
    approval = Finding(check=WAITING, passed=True, message=f"approved by {approver}",
                       evidence={"approver": approver})
    decision = Decision.accept([*findings, approval], anchor=True, **_ids(pending))
    recorded = ledger.promote(decision, pending.parent, pending.proposal, resolves=pending.id)
    if recorded is not None:
        return recorded
    stale = Decision.reject([Finding(
        check="stale_parent", passed=False,
        message=f"approved by {approver}, but {pending.parent[:12]} is no longer served; "
                "the model must propose again against the served version"), *findings],
        **_ids(pending))
    return ledger.record(stale, pending.proposal, resolves=pending.id)


def reject_pending(ledger: Ledger, id_: str, *, reason: str, approver: str,
                   now: float | None = None) -> Decision:
    """Reject a waiting proposal with a reason; same errors as ``approve_pending``."""
    expire_pending(ledger, now)
    pending = _waiting(ledger, id_)
    findings = [Finding.model_validate(f) for f in pending.findings]
    decision = Decision.reject([Finding(
        check=WAITING, passed=False, message=f"rejected by {approver}: {reason}",
        evidence={"approver": approver, "reason": reason}), *findings], **_ids(pending))
    return ledger.record(decision, pending.proposal, resolves=pending.id)


def expire_pending(ledger: Ledger, now: float | None = None) -> list[Decision]:
    """Reject, as timed out, every waiting proposal past its deadline."""
    now = time.time() if now is None else now
    expired = []
    for pending in ledger.pending():
        if pending.expires_at is None or pending.expires_at > now:
            continue
        findings = [Finding.model_validate(f) for f in pending.findings]
        decision = Decision.reject([Finding(
            check="approval_timeout", passed=False,
            message="no human decided before the approval timed out"), *findings],
            **_ids(pending))
        try:
            expired.append(ledger.record(decision, pending.proposal, resolves=pending.id))
        except ValueError:
            continue  # resolved concurrently by another process: nothing left to do
    return expired
