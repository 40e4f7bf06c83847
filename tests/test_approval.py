"""Human approval: pending proposals live in the ledger, resolve once, and time out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import guardrails as gr
from guardrails.testing import DictClient

STATE: dict[str, Any] = {"prompt": "be kind", "answers": {"a": "1"}, "default": "?"}
SUITE = [gr.CanaryCase(id="a", input="a", expect="1")]


def guarded_at(path: Path, **policy: Any) -> gr.GuardedClient:
    guard = gr.Guard(gr.FrozenConstraints(), SUITE, ledger=gr.SQLiteLedger(path),
                     approval=gr.ApprovalPolicy(**({"kinds": ("prompt",)} | policy)))
    return guard.wrap(DictClient(STATE))


def propose_prompt(guarded: gr.GuardedClient, text: str = "be brief") -> gr.Decision:
    return guarded.propose(gr.UpdateProposal(
        parent=guarded.version, kind="prompt",
        patch=[{"op": "replace", "path": "/prompt", "value": text}]))


def test_a_listed_kind_waits_instead_of_being_promoted(tmp_path: Path) -> None:
    """A proposal of a kind that needs approval is inconclusive, pending and not served."""
    guarded = guarded_at(tmp_path / "l.db")
    before = guarded.version
    decision = propose_prompt(guarded)
    assert decision.verdict is gr.Verdict.INCONCLUSIVE
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "human_approval"
    assert guarded.version == before
    assert [p.id for p in guarded.pending()] == [decision.proposal_id]


def test_pending_approvals_survive_a_restart_and_approval_promotes_a_new_anchor(
        tmp_path: Path) -> None:
    """After a restart the pending proposal is still there; approving it serves it as the anchor."""
    decision = propose_prompt(guarded_at(tmp_path / "l.db"))
    reopened = guarded_at(tmp_path / "l.db")
    assert [p.id for p in reopened.pending()] == [decision.proposal_id]
    approved = reopened.approve(decision.proposal_id, approver="alice")
    assert approved.accepted and approved.anchor
    assert reopened.version == decision.candidate
    assert reopened.ledger.anchor_version() == decision.candidate
    assert reopened.invoke("a").version == decision.candidate


def test_an_approval_resolves_only_once(tmp_path: Path) -> None:
    """Approving or rejecting an already resolved proposal raises ValueError."""
    guarded = guarded_at(tmp_path / "l.db")
    decision = propose_prompt(guarded)
    guarded.reject(decision.proposal_id, reason="too terse", approver="bob")
    with pytest.raises(ValueError, match="already rejected"):
        guarded.approve(decision.proposal_id)
    with pytest.raises(ValueError, match="already rejected"):
        guarded.reject(decision.proposal_id, reason="again")


def test_rejection_is_recorded_with_the_reason(tmp_path: Path) -> None:
    """A human rejection is a recorded rejected decision naming who and why."""
    guarded = guarded_at(tmp_path / "l.db")
    decision = propose_prompt(guarded)
    rejected = guarded.reject(decision.proposal_id, reason="too terse", approver="bob")
    assert rejected.verdict is gr.Verdict.REJECTED and rejected.entry_index is not None
    assert rejected.reasons[0] == "rejected by bob: too terse"
    assert guarded.pending() == []


def test_an_unknown_id_is_a_key_error(tmp_path: Path) -> None:
    """Approving an id that never waited raises KeyError."""
    with pytest.raises(KeyError):
        guarded_at(tmp_path / "l.db").approve("nope")


def test_a_pending_approval_times_out_to_rejection(tmp_path: Path) -> None:
    """Past its timeout a pending proposal is rejected as timed out and cannot be approved."""
    guarded = guarded_at(tmp_path / "l.db")
    decision = propose_prompt(guarded)
    expired = gr.expire_pending(guarded.ledger, now=10**12)
    assert [d.proposal_id for d in expired] == [decision.proposal_id]
    assert expired[0].deciding_finding is not None
    assert expired[0].deciding_finding.check == "approval_timeout"
    with pytest.raises(ValueError, match="already rejected"):
        guarded.approve(decision.proposal_id)


def test_approval_of_a_stale_proposal_is_rejected(tmp_path: Path) -> None:
    """If another version was promoted meanwhile, approving records a stale rejection."""
    guarded = guarded_at(tmp_path / "l.db")
    first, second = propose_prompt(guarded, "one"), propose_prompt(guarded, "two")
    assert guarded.approve(first.proposal_id).accepted
    late = guarded.approve(second.proposal_id)
    assert late.verdict is gr.Verdict.REJECTED
    assert late.deciding_finding is not None and late.deciding_finding.check == "stale_parent"
    assert guarded.version == first.candidate


def test_inconclusive_waits_only_when_the_policy_says_so(tmp_path: Path) -> None:
    """An inconclusive gate verdict becomes pending when the policy asks for it."""

    def undecided(evidence: gr.CanaryEvidence) -> tuple[gr.Verdict, list[gr.Finding]]:
        return gr.Verdict.INCONCLUSIVE, [gr.Finding(check="rule", passed=False, message="unsure")]

    guard = gr.Guard(gr.FrozenConstraints(), SUITE, ledger=gr.SQLiteLedger(tmp_path / "l.db"),
                     decision_rule=undecided, approval=gr.ApprovalPolicy(inconclusive=True))
    guarded = guard.wrap(DictClient(STATE))
    decision = propose_prompt(guarded)
    assert decision.verdict is gr.Verdict.INCONCLUSIVE
    assert [p.id for p in guarded.pending()] == [decision.proposal_id]
