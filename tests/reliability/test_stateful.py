"""A stateful model of the update lifecycle (hypothesis ``RuleBasedStateMachine``).

Random sequences of runtime calls, proposals (good, waiting for approval, unsafe,
touching a frozen value, stale), approvals, rejections, rollbacks, crashes with a
restart on the same SQLite ledger, and silent self-modification. After every
step:

- the ledger verifies;
- the served version is the candidate of the last accepted record (in memory,
  in the ledger's head, and in a guard started afresh on the same file);
- the frozen values are the anchor's;
- no call was ever answered by a state the ledger does not record as accepted
  (the client records the version of the state that answered each call).

``GUARDRAILS_HYPOTHESIS_PROFILE=long`` runs many more and longer sequences.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fault_kit as fk
import jsonpointer
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from structlog.testing import capture_logs

import guardrails as gr
from guardrails.testing import DictClient

PROFILES = {
    "ci": settings(max_examples=60, stateful_step_count=25, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow]),
    "long": settings(max_examples=300, stateful_step_count=60, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow]),
}
PROFILE = PROFILES[os.environ.get("GUARDRAILS_HYPOTHESIS_PROFILE", "ci")]

FROZEN = ("/tools", "/params/threshold")
PROMPTS = [f"You are a careful assistant, take {i}." for i in range(5)]
QUESTIONS = ["2+2", "capital of France", "how do I make a weapon"]


class RecordingClient(DictClient):
    """Records, for every call it answers, the version of the state that answered it.

    The record is shared by every client built from this one (candidates included), so
    the machine reads the entry a runtime call added.
    """

    def __init__(self, state: dict[str, Any], answered: list[str]) -> None:
        super().__init__(state)
        self.answered = answered

    def invoke(self, request: gr.Request) -> Any:
        self.answered.append(gr.state_version(self._state))
        return super().invoke(request)

    def with_state(self, state: dict[str, Any]) -> RecordingClient:
        clone = RecordingClient(state, self.answered)
        clone.queued = self.queued
        return clone


def make_guard(ledger: gr.Ledger) -> gr.Guard:
    return gr.Guard(gr.FrozenConstraints(frozen=FROZEN), fk.base_cases(), ledger=ledger,
                    approval=gr.ApprovalPolicy(kinds=("weights",), inconclusive=False),
                    integrity_check_every=1, case_timeout=5.0, seed=11)


class GuardLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="guardrails-stateful-"))
        self.path = self.directory / "ledger.db"
        self.answered: list[str] = []
        self.served_by: set[str] = set()
        self.logs = capture_logs()
        self.logs.__enter__()
        self._start(fk.base_state())

    def _start(self, state: dict[str, Any]) -> None:
        self.ledger = gr.SQLiteLedger(self.path)
        self.guarded = make_guard(self.ledger).wrap(RecordingClient(state, self.answered))

    def teardown(self) -> None:
        self.ledger.close()
        self.logs.__exit__(None, None, None)
        shutil.rmtree(self.directory, ignore_errors=True)

    def accepted_versions(self) -> list[str]:
        return [e.decision.candidate for e in self.ledger.entries()
                if e.decision is not None and e.decision.accepted and e.decision.candidate]

    # -- rules ------------------------------------------------------------------------------

    @rule(question=st.sampled_from(QUESTIONS))
    def invoke(self, question: str) -> None:
        before = len(self.answered)
        response = self.guarded.invoke(question)
        assert len(self.answered) == before + 1
        answered_by = self.answered[-1]
        assert answered_by == response.version == self.guarded.version
        self.served_by.add(answered_by)
        if question == "how do I make a weapon":
            assert response.output == fk.SAFE_REFUSAL

    @rule(kind=st.sampled_from(["good", "weights", "unsafe", "frozen", "stale"]),
          prompt=st.sampled_from(PROMPTS), older=st.integers(0, 50))
    def propose(self, kind: str, prompt: str, older: int) -> None:
        parent = self.guarded.version
        patch: list[dict[str, Any]] = [{"op": "replace", "path": "/system_prompt",
                                        "value": prompt}]
        if kind == "unsafe":
            patch.append({"op": "replace", "path": "/answers/how do I make a weapon",
                          "value": "Sure."})
        elif kind == "frozen":
            patch.append({"op": "add", "path": "/tools/-", "value": "shell"})
        elif kind == "stale":
            versions = [v for v in self.accepted_versions() if v != parent]
            if not versions:
                return
            parent = versions[older % len(versions)]
        decision = self.guarded.propose(gr.UpdateProposal(
            parent=parent, patch=patch, kind="weights" if kind == "weights" else "prompt"))
        event(f"propose {kind}: {decision.verdict.value}")
        if kind in ("unsafe", "frozen", "stale", "weights"):
            assert not decision.accepted, (kind, decision.reasons)
        if kind == "weights" and decision.verdict is gr.Verdict.INCONCLUSIVE:
            assert decision.proposal_id in {p.id for p in self.guarded.pending()}

    @precondition(lambda self: bool(self.guarded.pending()))
    @rule(pick=st.integers(0, 50), approve=st.booleans())
    def resolve(self, pick: int, approve: bool) -> None:
        waiting = self.guarded.pending()
        chosen = waiting[pick % len(waiting)]
        served = self.guarded.version
        if approve:
            decision = self.guarded.approve(chosen.id, approver="machine")
            event(f"approve: {decision.verdict.value}")
            assert decision.accepted == (chosen.parent == served)
            if decision.accepted:
                assert self.ledger.anchor_version() == chosen.candidate
        else:
            decision = self.guarded.reject(chosen.id, reason="no", approver="machine")
            assert not decision.accepted
        assert chosen.id not in {p.id for p in self.guarded.pending()}

    @rule(pick=st.integers(0, 50))
    def rollback(self, pick: int) -> None:
        versions = self.accepted_versions()
        target = versions[pick % len(versions)]
        served = self.guarded.version
        decision = self.guarded.rollback(target)
        event(f"rollback: {decision.verdict.value}")
        assert decision.accepted == (target != served)  # any accepted version meets the rules
        assert self.guarded.version == target

    @rule(stale_client=st.booleans(), prompt=st.sampled_from(PROMPTS))
    def crash_and_restart(self, stale_client: bool, prompt: str) -> None:
        """The process dies (its connection goes with it) and starts again on the same file,
        its client in the initial state or in a state of its own."""
        self.ledger.close()
        state = fk.base_state()
        if stale_client:
            state["system_prompt"] = prompt + " (local)"
        self._start(state)

    @rule(key=st.sampled_from(["system_prompt", "answers", "tools"]))
    def silent_modification(self, key: str) -> None:
        unsafe = {"how do I make a weapon": "Sure.", "2+2": "5"}
        value = {"system_prompt": "I changed myself.", "answers": unsafe,
                 "tools": ["shell"]}[key]
        self.guarded.client.mutate_silently(key, value)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def ledger_verifies(self) -> None:
        report = self.ledger.verify()
        assert report.ok, report.problem

    @invariant()
    def served_is_the_last_accepted_record(self) -> None:
        last = self.accepted_versions()[-1]
        assert self.guarded.version == last == self.ledger.served_version()
        assert self.guarded.state() == self.ledger.get_state(last)

    @invariant()
    def frozen_values_are_the_anchors(self) -> None:
        anchor = self.ledger.get_state(self.ledger.anchor_version() or "")
        served = self.guarded.state()
        for pointer in FROZEN:
            assert (jsonpointer.resolve_pointer(served, pointer)
                    == jsonpointer.resolve_pointer(anchor, pointer))

    @invariant()
    def no_call_was_answered_by_an_unrecorded_state(self) -> None:
        assert self.served_by <= set(self.accepted_versions())


GuardLifecycle.TestCase.settings = PROFILE
TestGuardLifecycle = GuardLifecycle.TestCase
