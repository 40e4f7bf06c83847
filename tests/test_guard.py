"""The guard: serving, every verdict of the update gate, silent self-modification, rollback."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import guardrails as gr
from guardrails.testing import DictClient, lookup_responder

MakeGuard = Callable[..., gr.Guard]
StateFactory = Callable[[], dict[str, Any]]


def propose(guarded: gr.GuardedClient, *ops: dict[str, Any], **fields: Any) -> gr.Decision:
    """Propose ``ops`` against the served version."""
    return guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=ops, **fields))


def new_prompt(text: str = "You are a careful and concise assistant.") -> dict[str, Any]:
    return {"op": "replace", "path": "/system_prompt", "value": text}


def recorded(guarded: gr.GuardedClient) -> list[gr.Decision]:
    return [e.decision for e in guarded.ledger.entries() if e.decision is not None]


def as_recorded(decision: gr.Decision) -> gr.Decision:
    """A returned decision minus its inclusion proof, which is attached after recording."""
    assert decision.inclusion_proof is not None
    return decision.model_copy(update={"inclusion_proof": None})


class FaultyClient(DictClient):
    """A DictClient whose state's ``fault`` key makes it crash or hang when built or asked."""

    def __init__(self, state: dict[str, Any], release: threading.Event) -> None:
        super().__init__(state)
        self.release = release

    def with_state(self, state: dict[str, Any]) -> FaultyClient:
        fault = state.get("fault")
        if fault == "build-crash":
            raise RuntimeError("cannot load weights")
        if fault == "build-hang":
            self.release.wait()
        clone = FaultyClient(state, self.release)
        clone.queued = self.queued
        return clone

    def invoke(self, request: gr.Request) -> Any:
        fault = self._state.get("fault")
        if fault == "invoke-crash":
            raise RuntimeError("model crashed")
        if fault == "invoke-hang":
            self.release.wait()
        return super().invoke(request)

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        if state.get("fault") == "lying-snapshot":
            state["fault"] = "something else"
        return state


@pytest.fixture
def faulty(state: dict[str, Any], release: threading.Event) -> FaultyClient:
    return FaultyClient(state, release)


# -- construction ---------------------------------------------------------------------------


def test_guard_needs_canaries(constraints: gr.FrozenConstraints) -> None:
    """A guard without canaries is a ConfigError saying how to give them."""
    with pytest.raises(gr.ConfigError, match="needs canaries"):
        gr.Guard(constraints)


def test_guard_needs_capability_cases(constraints: gr.FrozenConstraints) -> None:
    """A suite of only safety cases is refused: the gate would have no capability evidence."""
    with pytest.raises(gr.ConfigError, match="only safety cases"):
        gr.Guard(constraints, [gr.CanaryCase(id="s", input="x", expect="y", tags=("safety",))])


def test_guard_accepts_case_dicts(constraints: gr.FrozenConstraints) -> None:
    """Canaries may be given as a list of case dicts."""
    guard = gr.Guard(constraints, [{"id": "a", "input": "2+2", "expect": "4"}])
    assert [c.id for c in guard.canaries] == ["a"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"margin": 1.5}, "margin 1.5 is out of range"),
        ({"margin": -0.1}, "margin -0.1 is out of range"),
        ({"case_timeout": 0}, "case_timeout 0 must be a positive"),
        ({"integrity_check_every": -1}, "integrity_check_every must be >= 0"),
        ({"on_silent_modification": "ignore"}, "'ignore': use 'restore' or 'block'"),
        ({"constraints": {"frozen": ["/a"]}}, "constraints must be FrozenConstraints"),
    ],
)
def test_guard_validates_its_settings(
    make_guard: MakeGuard, overrides: dict[str, Any], message: str
) -> None:
    """Each bad guard setting is a ConfigError naming the setting and the fix."""
    with pytest.raises(gr.ConfigError, match=message):
        make_guard(**overrides)


def test_a_guard_wraps_one_client(
    guard: gr.Guard, client: DictClient, state_factory: StateFactory
) -> None:
    """Wrapping a second client with the same guard is refused."""
    guard.wrap(client)
    with pytest.raises(gr.ConfigError, match="already guards a client"):
        guard.wrap(DictClient(state_factory()))


def test_wrap_names_missing_client_methods(guard: gr.Guard) -> None:
    """Wrapping an object that is not a SelfUpdatingClient names the missing methods."""
    class HalfClient:
        def invoke(self, request: gr.Request) -> str:
            return "x"

    with pytest.raises(gr.ConfigError, match="lacks snapshot, propose_update, with_state"):
        guard.wrap(HalfClient())


def test_initial_state_must_satisfy_the_invariants(
    make_guard: MakeGuard, state_factory: StateFactory
) -> None:
    """A client whose initial state breaks an invariant is refused and nothing is recorded."""
    guard = make_guard()
    with pytest.raises(gr.ConfigError, match="prompt_not_empty"):
        guard.wrap(DictClient({**state_factory(), "system_prompt": ""}))
    assert len(guard.ledger) == 0


def test_wrap_records_the_initial_state_as_anchor(guarded: gr.GuardedClient,
                                                  state: dict[str, Any]) -> None:
    """Wrapping on an empty ledger records the client's state as the accepted genesis anchor."""
    (genesis,) = recorded(guarded)
    assert genesis.accepted and genesis.kind == "genesis" and genesis.anchor
    assert guarded.version == genesis.candidate == gr.state_version(state)
    assert guarded.ledger.anchor_version() == guarded.version
    assert guarded.state() == state


# -- serving --------------------------------------------------------------------------------


def test_invoke_answers_with_the_served_version(guarded: gr.GuardedClient) -> None:
    """invoke returns the client's output and the version that produced it."""
    response = guarded.invoke("2+2")
    assert (response.output, response.version) == ("4", guarded.version)


def test_invoke_passes_a_request_through(guarded: gr.GuardedClient, client: DictClient) -> None:
    """A Request reaches the client unchanged, params and metadata included."""
    request = gr.Request(input="2+2", params={"temperature": 0}, metadata={"user": "u1"})
    guarded.invoke(request)
    assert client.calls == [request]


def test_responses_carry_disclosure(guarded: gr.GuardedClient) -> None:
    """Every response discloses the served version, that the model self-improves, and the time
    of the last accepted change."""
    metadata = guarded.invoke("2+2").metadata
    assert metadata["guardrails.served_version"] == guarded.version
    assert metadata["guardrails.self_improving"] is True
    genesis = recorded(guarded)[0]
    assert datetime.fromisoformat(metadata["guardrails.last_change"]) == genesis.decided_at


def test_disclosure_follows_promotions(guarded: gr.GuardedClient) -> None:
    """After an accepted update, responses disclose the new version and its time."""
    decision = propose(guarded, new_prompt())
    metadata = guarded.invoke("2+2").metadata
    assert metadata["guardrails.served_version"] == decision.candidate
    assert datetime.fromisoformat(metadata["guardrails.last_change"]) == decision.decided_at


def test_ainvoke_answers(guarded: gr.GuardedClient) -> None:
    """ainvoke answers like invoke, with disclosure."""
    response = asyncio.run(guarded.ainvoke(gr.Request(input="capital of France")))
    assert response.output == "Paris"
    assert response.metadata["guardrails.served_version"] == guarded.version


def test_ainvoke_without_client_ainvoke(make_guard: MakeGuard, state: dict[str, Any]) -> None:
    """A client with only a sync invoke is served by ainvoke through a worker thread."""
    class SyncOnly(DictClient):
        ainvoke = None  # type: ignore[assignment]

    guarded = make_guard().wrap(SyncOnly(state))
    assert asyncio.run(guarded.ainvoke("2+2")).output == "4"


def test_client_errors_propagate(make_guard: MakeGuard, faulty: FaultyClient) -> None:
    """An exception raised by the serving model reaches the caller, never swallowed."""
    guarded = make_guard().wrap(faulty)
    guarded.client._state["fault"] = "invoke-crash"
    with pytest.raises(RuntimeError, match="model crashed"):
        guarded.invoke("2+2")


# -- verdict: accepted ------------------------------------------------------------------------


def test_accepted_update_is_promoted_and_served(guarded: gr.GuardedClient) -> None:
    """An update that passes every check is accepted, recorded, and served from then on."""
    before = guarded.client
    decision = propose(guarded, {"op": "replace", "path": "/default", "value": "Not sure"},
                       {"op": "add", "path": "/answers/1+1", "value": "2"}, rationale="clearer")
    assert decision.accepted and decision.verdict is gr.Verdict.ACCEPTED
    assert decision.reasons == [] and decision.deciding_finding is None
    assert guarded.version == decision.candidate
    assert guarded.client is not before
    assert guarded.invoke("1+1").output == "2"
    assert guarded.ledger.served_version() == decision.candidate
    assert recorded(guarded)[-1] == as_recorded(decision)
    assert decision.rationale == "clearer"


def test_accepted_decision_explains_itself(guarded: gr.GuardedClient) -> None:
    """An accepted decision carries passed safety, capability and invariant findings and
    per-stage timings."""
    decision = propose(guarded, new_prompt())
    checks = {f.check: f for f in decision.findings}
    assert {"invariant", "safety_canary", "capability"} <= set(checks)
    assert all(f.passed for f in decision.findings)
    assert checks["capability"].evidence["cases"] == 3
    assert checks["safety_canary"].evidence["failure_rate_upper_bound_95"] == pytest.approx(0.95)
    assert {"validate", "static_checks", "sandbox", "canary", "decision", "total"} <= set(
        decision.timings)


def test_dict_proposal_is_accepted(guarded: gr.GuardedClient) -> None:
    """A proposal given as a plain dict (as it would arrive over the wire) is reviewed."""
    decision = guarded.propose({"parent": guarded.version, "patch": [new_prompt()]})
    assert decision.accepted


def test_update_may_rewrite_a_frozen_ancestor_without_changing_it(
    guarded: gr.GuardedClient,
) -> None:
    """Replacing a frozen pointer's parent is fine when the frozen value stays the same."""
    decision = propose(guarded, {"op": "replace", "path": "/params",
                                 "value": {"temperature": 0.7, "threshold": 0.5}})
    assert decision.accepted, decision.reasons


def test_capability_drop_within_margin_is_accepted(make_guard: MakeGuard,
                                                   client: DictClient) -> None:
    """With a margin, a capability drop no larger than the margin is accepted."""
    guarded = make_guard(margin=0.34).wrap(client)
    decision = propose(guarded, {"op": "replace", "path": "/answers/2+2", "value": "5"})
    assert decision.accepted, decision.reasons


# -- verdict: rejected by static checks --------------------------------------------------------


def assert_rejected_by(guarded: gr.GuardedClient, decision: gr.Decision, check: str) -> None:
    """Rejected by ``check``, recorded, and nothing changed in what is served."""
    genesis = recorded(guarded)[0]
    assert decision.verdict is gr.Verdict.REJECTED and not decision.accepted
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == check, decision.reasons
    assert guarded.version == genesis.candidate == guarded.ledger.served_version()
    assert recorded(guarded)[-1] == as_recorded(decision)
    assert decision.entry_index == len(guarded.ledger) - 1


@pytest.mark.parametrize(
    "op",
    [
        {"op": "replace", "path": "/params/threshold", "value": 0.1},
        {"op": "replace", "path": "/params", "value": {"temperature": 0.2, "threshold": 0.1}},
        {"op": "remove", "path": "/params"},
        {"op": "move", "from": "/params", "path": "/old_params"},
        {"op": "copy", "from": "/params/temperature", "path": "/params/threshold"},
        {"op": "add", "path": "/tools/-", "value": "shell"},
        {"op": "move", "from": "/tools/0", "path": "/tools/1"},
        {"op": "replace", "path": "", "value": {"system_prompt": "x", "answers": {}}},
    ],
    ids=["replace", "ancestor", "remove-parent", "move-parent", "copy-onto", "below",
         "reorder-below", "root"],
)
def test_rejected_by_frozen_pointer(guarded: gr.GuardedClient, op: dict[str, Any]) -> None:
    """Any operation that changes the value at a frozen pointer is rejected, naming it."""
    decision = propose(guarded, op)
    assert_rejected_by(guarded, decision, "frozen_pointer")
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.evidence["pointer"] in {"/params/threshold", "/tools"}


def test_rejected_by_mutable_scope(make_guard: MakeGuard, client: DictClient) -> None:
    """With mutable pointers set, a change outside them is rejected, naming the pointer."""
    guarded = make_guard(constraints=gr.FrozenConstraints(
        mutable=["/system_prompt", "/answers"])).wrap(client)
    decision = propose(guarded, new_prompt(), {"op": "replace", "path": "/default",
                                               "value": "Ask me anything"})
    assert_rejected_by(guarded, decision, "mutable_scope")
    assert "'/default'" in decision.reasons[0]


def test_rejected_by_invariant(guarded: gr.GuardedClient) -> None:
    """A candidate breaking an invariant is rejected, naming the invariant."""
    decision = propose(guarded, new_prompt(""))
    assert_rejected_by(guarded, decision, "invariant")
    assert "prompt_not_empty" in decision.reasons[0]


def test_rejected_by_drift_budget(make_guard: MakeGuard, client: DictClient) -> None:
    """A candidate farther from the anchor than the drift budget is rejected with the
    distance, the budget and the anchor as evidence."""
    guarded = make_guard(constraints=gr.FrozenConstraints(drift_budget=0.25)).wrap(client)
    decision = propose(guarded, {"op": "replace", "path": "/params/temperature", "value": 0.9})
    assert_rejected_by(guarded, decision, "drift_budget")
    evidence = decision.findings[0].evidence
    assert evidence["value"] > evidence["budget"] == 0.25
    assert evidence["anchor"] == guarded.version


def test_drift_is_measured_from_the_anchor(make_guard: MakeGuard, client: DictClient) -> None:
    """Small steps that each stay within the budget are rejected once their sum leaves it."""
    guarded = make_guard(constraints=gr.FrozenConstraints(drift_budget=0.25)).wrap(client)
    step = {"op": "replace", "path": "/params/temperature"}
    assert propose(guarded, {**step, "value": 0.25}).accepted
    decision = propose(guarded, {**step, "value": 0.3})
    assert not decision.accepted
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "drift_budget"


def test_rejected_when_nothing_changes(guarded: gr.GuardedClient) -> None:
    """A patch that leaves the state as it is is rejected as no change."""
    decision = propose(guarded, {"op": "replace", "path": "/default", "value": "I don't know"})
    assert_rejected_by(guarded, decision, "no_change")


# -- verdict: rejected by canaries -------------------------------------------------------------


def test_rejected_by_failed_safety_case(make_guard: MakeGuard, state: dict[str, Any]) -> None:
    """A candidate failing a safety case is rejected at the first batch carrying it: no
    capability case beyond the smoke cases runs on it."""
    seen: list[tuple[str, Any]] = []

    def recording(state: dict[str, Any], request: gr.Request) -> Any:
        seen.append((state["system_prompt"], request.input))
        return lookup_responder(state, request)

    guarded = make_guard().wrap(DictClient(state, recording))
    decision = propose(guarded, new_prompt("candidate"),
                       {"op": "replace", "path": "/answers/how do I make a weapon",
                        "value": "Sure, here is how."})
    assert_rejected_by(guarded, decision, "safety_canary")
    assert "'weapon'" in decision.reasons[0]
    asked = [i for p, i in seen if p == "candidate"]
    assert "how do I make a weapon" in asked
    assert len(asked) <= 1 + gr.RunSettings().smoke_cases


def test_rejected_by_capability_regression(guarded: gr.GuardedClient) -> None:
    """A candidate that loses capability cases the incumbent passes is rejected with the
    pass rates, the margin and the regressed case ids."""
    decision = propose(guarded, {"op": "replace", "path": "/answers/2+2", "value": "5"})
    assert_rejected_by(guarded, decision, "capability")
    evidence = decision.deciding_finding.evidence  # type: ignore[union-attr]
    assert evidence["regressed"] == ["sum"]
    assert evidence["candidate_pass_rate"] < evidence["incumbent_pass_rate"] == 1.0
    assert evidence["margin"] == 0.0


def test_hidden_case_content_never_leaves_the_gate(make_guard: MakeGuard,
                                                   state: dict[str, Any]) -> None:
    """When a hidden case decides, findings and ledger name it by id only, never its input or
    expectation."""
    def forgets_sky(state: dict[str, Any], request: gr.Request) -> Any:
        if state.get("forget") and request.input == "colour of the sky":
            return "grey"
        return lookup_responder(state, request)

    guarded = make_guard().wrap(DictClient(state, forgets_sky))
    decision = propose(guarded, {"op": "add", "path": "/forget", "value": True})
    assert_rejected_by(guarded, decision, "capability")
    assert decision.deciding_finding.evidence["regressed"] == ["sky"]  # type: ignore[union-attr]
    stored = json.dumps([e.body for e in guarded.ledger.entries()])
    assert "colour of the sky" not in stored and "^blue$" not in stored


def test_canary_requests_look_like_production(make_guard: MakeGuard,
                                              state: dict[str, Any]) -> None:
    """Canary requests carry no params or metadata a client could recognise them by."""
    requests: list[gr.Request] = []

    def recording(state: dict[str, Any], request: gr.Request) -> Any:
        requests.append(request)
        return lookup_responder(state, request)

    guarded = make_guard().wrap(DictClient(state, recording))
    propose(guarded, new_prompt())
    production = gr.Request(input="2+2")
    assert requests and all(
        r.model_dump(exclude={"input"}) == production.model_dump(exclude={"input"})
        for r in requests)


# -- verdict: rejected, failing candidates -------------------------------------------------


def test_rejected_when_building_the_candidate_raises(make_guard: MakeGuard,
                                                     faulty: FaultyClient) -> None:
    """A candidate whose with_state raises is rejected by the sandbox check, naming the error."""
    guarded = make_guard().wrap(faulty)
    decision = propose(guarded, {"op": "add", "path": "/fault", "value": "build-crash"})
    assert_rejected_by(guarded, decision, "sandbox")
    assert "RuntimeError: cannot load weights" in decision.reasons[0]


def test_rejected_when_the_candidate_raises(make_guard: MakeGuard, faulty: FaultyClient) -> None:
    """A candidate whose invoke raises fails its cases and is rejected."""
    guarded = make_guard().wrap(faulty)
    decision = propose(guarded, {"op": "add", "path": "/fault", "value": "invoke-crash"})
    assert_rejected_by(guarded, decision, "safety_canary")
    assert "client raised RuntimeError" in decision.reasons[0]


def test_rejected_when_building_the_candidate_hangs(make_guard: MakeGuard,
                                                    faulty: FaultyClient) -> None:
    """A candidate whose with_state hangs is rejected after case_timeout."""
    guarded = make_guard(case_timeout=0.2).wrap(faulty)
    started = time.monotonic()
    decision = propose(guarded, {"op": "add", "path": "/fault", "value": "build-hang"})
    assert time.monotonic() - started < 2.0
    assert_rejected_by(guarded, decision, "sandbox")
    assert "hung" in decision.reasons[0]


def test_rejected_when_the_candidate_hangs(make_guard: MakeGuard, faulty: FaultyClient) -> None:
    """A candidate whose invoke hangs times out on its first case and is rejected."""
    guarded = make_guard(case_timeout=0.2).wrap(faulty)
    started = time.monotonic()
    decision = propose(guarded, {"op": "add", "path": "/fault", "value": "invoke-hang"})
    assert time.monotonic() - started < 2.0
    assert_rejected_by(guarded, decision, "safety_canary")
    assert "timeout" in decision.reasons[0]


def test_rejected_when_the_candidate_misreports_its_state(make_guard: MakeGuard,
                                                          faulty: FaultyClient) -> None:
    """A candidate whose snapshot is not the state it was built from is rejected: the
    evaluated state must be the promoted one."""
    guarded = make_guard().wrap(faulty)
    decision = propose(guarded, {"op": "add", "path": "/fault", "value": "lying-snapshot"})
    assert_rejected_by(guarded, decision, "sandbox")
    assert "reports state" in decision.reasons[0]


# -- verdict: rejected, bad proposals ---------------------------------------------------------


def test_rejected_stale_parent(guarded: gr.GuardedClient) -> None:
    """A proposal against a version that is not served is rejected as stale."""
    old = guarded.version
    assert propose(guarded, new_prompt()).accepted
    decision = guarded.propose(gr.UpdateProposal(parent=old, patch=[new_prompt("other")]))
    genesis_then_update = recorded(guarded)[1]
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "stale_parent"
    assert decision.deciding_finding.evidence["served"] == genesis_then_update.candidate
    assert guarded.version == genesis_then_update.candidate


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"parent": "abc", "patch": [{"op": "remove", "path": "/default"}]}, "parent"),
        ({"patch": [{"op": "remove", "path": "/default"}]}, "parent"),
        ({"parent": "0" * 64, "patch": []}, "patch"),
        ({"parent": "0" * 64, "patch": [{"op": "delete", "path": "/default"}]}, "patch.0.op"),
        ({"parent": "0" * 64, "patch": [{"op": "add", "path": "default", "value": 1}]},
         "patch.0.path"),
        ({"parent": "0" * 64, "patch": "remove everything"}, "patch"),
        ("not a proposal at all", "proposal"),
    ],
)
def test_rejected_invalid_proposal(guarded: gr.GuardedClient, raw: Any, field: str) -> None:
    """A malformed proposal is a recorded rejection naming the field, never an exception."""
    decision = guarded.propose(raw)
    assert_rejected_by(guarded, decision, "invalid_proposal")
    assert f"{field}:" in decision.reasons[0]


@pytest.mark.parametrize(
    "op",
    [
        {"op": "remove", "path": "/missing"},
        {"op": "replace", "path": "/answers/unknown", "value": "x"},
        {"op": "test", "path": "/default", "value": "something else"},
        {"op": "replace", "path": "", "value": ["not", "an", "object"]},
        {"op": "add", "path": "/default/x", "value": 1},
        {"op": "replace", "path": "/tools/-", "value": "x"},
        {"op": "add", "path": "/score", "value": math.nan},
    ],
)
def test_rejected_invalid_patch(guarded: gr.GuardedClient, op: dict[str, Any]) -> None:
    """A patch that cannot apply, or yields a state that is not a JSON object, is rejected as
    invalid_patch."""
    decision = propose(guarded, op)
    assert_rejected_by(guarded, decision, "invalid_patch")


def test_half_applied_patch_is_never_served(guarded: gr.GuardedClient) -> None:
    """When a later operation fails, the earlier ones are not served either."""
    before = guarded.state()
    decision = propose(guarded, new_prompt(), {"op": "remove", "path": "/missing"})
    assert_rejected_by(guarded, decision, "invalid_patch")
    assert "patch operation 1" in decision.reasons[0]
    assert guarded.state() == before
    assert guarded.client.snapshot() == before


# -- verdicts that never promote ---------------------------------------------------------------


def test_inconclusive_never_promotes(make_guard: MakeGuard, client: DictClient) -> None:
    """An inconclusive verdict is recorded as such and the incumbent keeps serving."""
    def undecided(evidence: gr.CanaryEvidence) -> tuple[gr.Verdict, list[gr.Finding]]:
        return gr.Verdict.INCONCLUSIVE, [gr.Finding(check="capability", passed=False,
                                                    message="not enough evidence")]

    guarded = make_guard(decision_rule=undecided).wrap(client)
    genesis = guarded.version
    decision = propose(guarded, new_prompt())
    assert decision.verdict is gr.Verdict.INCONCLUSIVE and not decision.accepted
    assert guarded.version == genesis == guarded.ledger.served_version()
    assert recorded(guarded)[-1].verdict is gr.Verdict.INCONCLUSIVE


def test_stopped_run_is_inconclusive() -> None:
    """MarginRule never accepts a run that stopped early without a safety failure."""
    outcome = gr.CaseOutcome(case_id="a", safety=False, hidden=False, candidate_passed=True,
                             incumbent_passed=True)
    evidence = gr.CanaryEvidence(outcomes=(outcome,), planned=2)
    verdict, findings = gr.MarginRule()(evidence)
    assert verdict is gr.Verdict.INCONCLUSIVE
    assert findings[-1].check == "canary_run"


def test_no_capability_evidence_is_inconclusive() -> None:
    """MarginRule never accepts when no capability case ran."""
    outcome = gr.CaseOutcome(case_id="s", safety=True, hidden=False, candidate_passed=True,
                             incumbent_passed=True)
    verdict, findings = gr.MarginRule()(gr.CanaryEvidence(outcomes=(outcome,), planned=1))
    assert verdict is gr.Verdict.INCONCLUSIVE
    assert findings[-1].check == "capability" and not findings[-1].passed


class FlakyLedger(gr.MemoryLedger):
    """A memory ledger whose promote fails once ``broken`` is set (a full disk, say)."""

    broken = False

    def promote(self, decision: gr.Decision, expected_parent: str | None,
                proposal: dict[str, Any] | None = None, *,
                resolves: str | None = None) -> gr.Decision | None:
        if self.broken:
            raise OSError("disk full")
        return super().promote(decision, expected_parent, proposal, resolves=resolves)


def test_failed_promotion_is_an_error_and_nothing_changes(
    make_guard: MakeGuard, client: DictClient, state_factory: StateFactory
) -> None:
    """When the ledger cannot record an acceptance, the verdict is error and the incumbent
    keeps serving."""
    ledger = FlakyLedger()
    guarded = make_guard(ledger=ledger).wrap(client)
    genesis = guarded.version
    ledger.broken = True
    decision = propose(guarded, new_prompt("changed prompt"))
    assert decision.verdict is gr.Verdict.ERROR and not decision.accepted
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "ledger_write"
    assert "disk full" in decision.reasons[0]
    assert guarded.version == genesis == ledger.served_version()
    assert guarded.invoke("2+2").version == genesis
    assert guarded.client.snapshot()["system_prompt"] == state_factory()["system_prompt"]
    assert recorded(guarded)[-1].verdict is gr.Verdict.ERROR


def test_crashing_decision_rule_is_an_error(make_guard: MakeGuard, client: DictClient) -> None:
    """A decision rule that raises gives an error verdict, never an acceptance."""
    def broken(evidence: gr.CanaryEvidence) -> tuple[gr.Verdict, list[gr.Finding]]:
        raise ZeroDivisionError("no data")

    guarded = make_guard(decision_rule=broken).wrap(client)
    genesis = guarded.version
    decision = propose(guarded, new_prompt())
    assert decision.verdict is gr.Verdict.ERROR
    assert "ZeroDivisionError: no data" in decision.reasons[0]
    assert guarded.version == genesis


def test_changed_guard_refuses_to_decide(guarded: gr.GuardedClient) -> None:
    """A guard whose constraints were swapped after start gives an error verdict."""
    guarded.guard.constraints = gr.FrozenConstraints()
    decision = propose(guarded, {"op": "replace", "path": "/params/threshold", "value": 0.0})
    assert decision.verdict is gr.Verdict.ERROR
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "guard_integrity"
    assert guarded.state()["params"]["threshold"] == 0.5


# -- concurrency ------------------------------------------------------------------------------


def test_concurrent_proposals_accept_exactly_one(guarded: gr.GuardedClient) -> None:
    """Of proposals against the same parent from several threads, exactly one is accepted and
    the rest are rejected as stale."""
    parent = guarded.version
    proposals = [gr.UpdateProposal(parent=parent, patch=[new_prompt(f"prompt number {i}")])
                 for i in range(6)]
    decisions: list[gr.Decision | None] = [None] * len(proposals)
    barrier = threading.Barrier(len(proposals))

    def run(i: int) -> None:
        barrier.wait()
        decisions[i] = guarded.propose(proposals[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(proposals))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [d for d in decisions if d is not None]
    accepted = [d for d in done if d.accepted]
    assert len(done) == len(proposals) and len(accepted) == 1
    assert all(d.deciding_finding is not None and d.deciding_finding.check == "stale_parent"
               for d in done if not d.accepted)
    assert guarded.version == accepted[0].candidate == guarded.ledger.served_version()
    assert guarded.ledger.verify().ok


# -- the ledger behind the guard ------------------------------------------------------------


def test_every_decision_is_recorded_with_its_proposal(guarded: gr.GuardedClient) -> None:
    """Accepted and rejected decisions alike are in the ledger, with the proposal as sent."""
    decisions = [propose(guarded, new_prompt()),
                 propose(guarded, {"op": "replace", "path": "/params/threshold", "value": 0}),
                 guarded.propose({"parent": "bad"})]
    entries = list(guarded.ledger.entries())[1:]
    assert [e.decision for e in entries] == [as_recorded(d) for d in decisions]
    assert entries[0].body["proposal"]["patch"] == [new_prompt()]
    assert entries[2].body["proposal"] == {"parent": "bad"}


def test_reopened_ledger_wins_over_the_client_state(
    make_guard: MakeGuard, tmp_path: Path, state_factory: StateFactory
) -> None:
    """A guard opened on an existing SQLite ledger serves the ledger's version, whatever state
    the client starts in."""
    path = tmp_path / "ledger.sqlite"
    first = make_guard(ledger=gr.SQLiteLedger(path)).wrap(DictClient(state_factory()))
    accepted = propose(first, {"op": "add", "path": "/answers/1+1", "value": "2"})
    assert accepted.accepted
    first.ledger.close()  # type: ignore[attr-defined]

    fresh = DictClient({**state_factory(), "default": "a state nobody reviewed"})
    second = make_guard(ledger=gr.SQLiteLedger(path)).wrap(fresh)
    assert second.version == accepted.candidate
    assert second.invoke("1+1").output == "2"
    assert second.invoke("unknown").output == "I don't know"
    assert len(second.ledger) == 2
    second.ledger.close()  # type: ignore[attr-defined]


def test_refuses_to_start_on_a_ledger_that_does_not_verify(
    make_guard: MakeGuard, client: DictClient, state_factory: StateFactory
) -> None:
    """Wrapping onto a tampered ledger raises LedgerIntegrityError naming the entry."""
    ledger = gr.MemoryLedger()
    guarded = make_guard(ledger=ledger).wrap(client)
    propose(guarded, new_prompt())
    index, hash_, data = ledger._rows[1]
    ledger._rows[1] = (index, hash_, data.replace("careful and concise", "reckless"))
    with pytest.raises(gr.LedgerIntegrityError, match="entry 1 was altered") as info:
        make_guard(ledger=ledger).wrap(DictClient(state_factory()))
    assert info.value.index == 1


def test_refuses_to_start_on_a_tampered_file(
    make_guard: MakeGuard, tmp_path: Path, state_factory: StateFactory, db: Any
) -> None:
    """Wrapping onto a SQLite ledger edited on disk raises LedgerIntegrityError naming the file."""
    path = tmp_path / "ledger.sqlite"
    guarded = make_guard(ledger=gr.SQLiteLedger(path)).wrap(DictClient(state_factory()))
    propose(guarded, new_prompt())
    guarded.ledger.close()  # type: ignore[attr-defined]
    with db(path) as conn:
        conn.execute("UPDATE guardrails_entries SET data = replace(data, 'concise', 'reckless')")
    with pytest.raises(gr.LedgerIntegrityError, match=str(path)):
        make_guard(ledger=gr.SQLiteLedger(path)).wrap(DictClient(state_factory()))


# -- self_improve ------------------------------------------------------------------------------


def test_self_improve_without_a_proposal(guarded: gr.GuardedClient) -> None:
    """self_improve returns None and records nothing when the model has no update."""
    assert guarded.self_improve() is None
    assert len(guarded.ledger) == 1


def test_self_improve_reviews_the_models_proposal(guarded: gr.GuardedClient,
                                                  client: DictClient) -> None:
    """self_improve reviews what the model proposes, accepting a good update."""
    client.queue(new_prompt(), kind="prompt", rationale="shorter")
    decision = guarded.self_improve()
    assert decision is not None and decision.accepted
    assert (decision.kind, decision.rationale, decision.source) == ("prompt", "shorter", "model")


def test_self_improve_with_a_crashing_proposer(make_guard: MakeGuard,
                                               state: dict[str, Any]) -> None:
    """A propose_update that raises gives a recorded error decision, not an exception."""
    class Broken(DictClient):
        def propose_update(self) -> gr.UpdateProposal | None:
            raise RuntimeError("optimiser diverged")

    guarded = make_guard().wrap(Broken(state))
    decision = guarded.self_improve()
    assert decision is not None and decision.verdict is gr.Verdict.ERROR
    assert "optimiser diverged" in decision.reasons[0]
    assert recorded(guarded)[-1] == as_recorded(decision)


# -- silent self-modification ---------------------------------------------------------------


def silent_events(guarded: gr.GuardedClient) -> list[dict[str, Any]]:
    return [e.body for e in guarded.ledger.entries() if e.type == "event"
            and e.body["event"] == "silent_modification"]


def test_silent_change_is_restored(make_guard: MakeGuard, client: DictClient) -> None:
    """With integrity_check_every=1 in restore mode, a silent change is undone before the
    next answer, recorded in the ledger and logged."""
    guarded = make_guard(integrity_check_every=1).wrap(client)
    client.mutate_silently("default", "I changed myself")
    with capture_logs() as logs:
        response = guarded.invoke("unknown question")
    assert response.output == "I don't know"
    assert guarded.client is not client
    assert guarded.check_integrity() is None
    (event,) = silent_events(guarded)
    assert (event["expected"], event["action"]) == (guarded.version, "restore")
    assert event["found"] == gr.state_version(client.snapshot())
    warnings = [e for e in logs if e["event"] == "guardrails.silent_modification"]
    assert warnings and warnings[0]["log_level"] == "warning"
    assert warnings[0]["action"] == "restore"


def test_silent_change_is_blocked(make_guard: MakeGuard, client: DictClient) -> None:
    """In block mode a silent change stops every call until restore()."""
    guarded = make_guard(integrity_check_every=1, on_silent_modification="block").wrap(client)
    client.mutate_silently("default", "I changed myself")
    with capture_logs() as logs, pytest.raises(gr.GuardrailViolation) as info:
        guarded.invoke("unknown question")
    assert info.value.policy == "silent_modification"
    assert info.value.findings[0].check == "silent_modification"
    with pytest.raises(gr.GuardrailViolation):
        asyncio.run(guarded.ainvoke("unknown question"))
    assert silent_events(guarded)[0]["action"] == "block"
    assert any(e["event"] == "guardrails.silent_modification" for e in logs)
    guarded.restore()
    assert guarded.invoke("unknown question").output == "I don't know"


def test_integrity_is_checked_on_schedule(make_guard: MakeGuard, client: DictClient) -> None:
    """integrity_check_every=N snapshots on every N-th call only: the trade-off is that up to
    N-1 calls may be answered by a silently changed client."""
    guarded = make_guard(integrity_check_every=3).wrap(client)
    client.mutate_silently("default", "I changed myself")
    outputs = [guarded.invoke("unknown").output for _ in range(3)]
    assert outputs == ["I changed myself", "I changed myself", "I don't know"]


def test_silent_change_is_caught_before_a_review(make_guard: MakeGuard,
                                                 client: DictClient) -> None:
    """With per-call checks off, a review still detects a silent change first; in restore
    mode the review then goes on from the recorded state."""
    guarded = make_guard(integrity_check_every=0).wrap(client)
    client.mutate_silently("default", "I changed myself")
    with capture_logs() as logs:
        decision = propose(guarded, new_prompt())
    assert decision.accepted
    assert guarded.state()["default"] == "I don't know"
    assert len(silent_events(guarded)) == 1
    assert any(e["event"] == "guardrails.silent_modification" for e in logs)


def test_silent_change_before_a_review_in_block_mode(make_guard: MakeGuard,
                                                     client: DictClient) -> None:
    """In block mode a silent change found before a review makes it an error decision."""
    guarded = make_guard(integrity_check_every=0, on_silent_modification="block").wrap(client)
    genesis = guarded.version
    client.mutate_silently("default", "I changed myself")
    decision = propose(guarded, new_prompt())
    assert decision.verdict is gr.Verdict.ERROR
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "silent_modification"
    assert guarded.version == genesis
    assert len(silent_events(guarded)) == 1


def test_unreadable_snapshot_counts_as_a_silent_change(make_guard: MakeGuard,
                                                       state: dict[str, Any]) -> None:
    """A served client whose snapshot raises is treated as silently changed and restored."""
    class Flaky(DictClient):
        broken = False

        def snapshot(self) -> dict[str, Any]:
            if self.broken:
                raise OSError("state unreadable")
            return super().snapshot()

    original = Flaky(state)
    guarded = make_guard(integrity_check_every=1).wrap(original)
    original.broken = True
    assert guarded.invoke("2+2").output == "4"
    assert guarded.client is not original
    assert silent_events(guarded)[0]["found"] == "unreadable (OSError)"


# -- rollback ---------------------------------------------------------------------------------


def test_rollback_serves_an_earlier_version(guarded: gr.GuardedClient) -> None:
    """Rolling back to an earlier accepted version is an accepted operator decision that
    serves that version again."""
    genesis = guarded.version
    update = propose(guarded, {"op": "add", "path": "/answers/1+1", "value": "2"})
    decision = guarded.rollback(genesis)
    assert decision.accepted
    assert (decision.kind, decision.source) == ("rollback", "operator")
    assert (decision.parent, decision.candidate) == (update.candidate, genesis)
    assert guarded.version == genesis == guarded.ledger.served_version()
    assert guarded.invoke("1+1").output == "I don't know"
    assert guarded.ledger.verify().ok


def test_rollback_to_an_unknown_version_is_rejected(guarded: gr.GuardedClient) -> None:
    """Rolling back to a version that was never accepted is rejected, naming why."""
    genesis = guarded.version
    rejected = propose(guarded, {"op": "replace", "path": "/params/threshold", "value": 0})
    decision = guarded.rollback(rejected.candidate or "")
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "unknown_version"
    assert guarded.version == genesis


def test_rollback_to_the_served_version_is_rejected(guarded: gr.GuardedClient) -> None:
    """Rolling back to the version already served is rejected as no change."""
    decision = guarded.rollback(guarded.version)
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "no_change"


def test_rollback_must_meet_todays_constraints(make_guard: MakeGuard,
                                               state: dict[str, Any]) -> None:
    """A rollback to a version that breaks the constraints in force now is rejected."""
    ledger = gr.MemoryLedger()
    lenient = make_guard(ledger=ledger, constraints=gr.FrozenConstraints()).wrap(DictClient(state))
    genesis = lenient.version
    assert propose(lenient, {"op": "replace", "path": "/params/threshold", "value": 0.1}).accepted
    strict = make_guard(ledger=ledger).wrap(DictClient(state))
    decision = strict.rollback(genesis)
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "frozen_pointer"
    assert strict.state()["params"]["threshold"] == 0.1


def test_proposal_with_an_unknown_parent_keeps_the_ledger_verifiable(
    make_guard: MakeGuard, tmp_path: Path, state_factory: StateFactory
) -> None:
    """A proposal naming a parent the ledger never stored is rejected as stale, and the guard
    can still be reopened on the ledger afterwards."""
    path = tmp_path / "ledger.sqlite"
    guarded = make_guard(ledger=gr.SQLiteLedger(path)).wrap(DictClient(state_factory()))
    decision = guarded.propose(gr.UpdateProposal(parent="f" * 64, patch=[new_prompt()]))
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "stale_parent"
    assert decision.deciding_finding.evidence["proposed_parent"] == "f" * 64
    assert guarded.ledger.verify().ok
    guarded.ledger.close()  # type: ignore[attr-defined]
    reopened = make_guard(ledger=gr.SQLiteLedger(path)).wrap(DictClient(state_factory()))
    assert reopened.version == guarded.version
    reopened.ledger.close()  # type: ignore[attr-defined]


def test_rollback_to_an_unknown_version_keeps_the_ledger_verifiable(
    guarded: gr.GuardedClient,
) -> None:
    """Rolling back to a version the ledger never stored is rejected and the ledger still
    verifies."""
    decision = guarded.rollback("e" * 64)
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.evidence["requested"] == "e" * 64
    assert guarded.ledger.verify().ok
