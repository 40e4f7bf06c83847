"""The rollout behind a guard: an accepted candidate is staged on live traffic, disclosed in every
response, promoted or rolled back on live evidence, and followed by other replicas."""

from __future__ import annotations

import contextlib
import math
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import guardrails as gr
from guardrails.guard._rollout import _IN_FLIGHT
from guardrails.rollout import InvalidTransition, RolloutPolicy
from guardrails.testing import DictClient, capture_telemetry

STATE = {"answers": {"a": "A", "b": "B"}, "fail": 0.1, "rev": 0, "say": ""}
CASES = [gr.CanaryCase(id=k, input=k, expect=v) for k, v in STATE["answers"].items()]
FAST = RolloutPolicy(steps=(5, 25, 50, 100), min_samples=30, evaluate_every=10)


def responder(state: dict[str, Any], request: gr.Request) -> Any:
    """Canary inputs always pass; live inputs fail at the state's ``fail`` rate and carry
    the state's ``say`` prefix: a candidate the offline canaries cannot tell apart."""
    text = str(request.input)
    live = text.startswith("live")
    if live and zlib.crc32(text.encode()) % 1000 < state["fail"] * 1000:
        raise RuntimeError("the model could not answer")
    return (state["say"] if live else "") + state["answers"].get(text, "?")


class ShadowSafe(DictClient):
    """A client declaring its calls free of side effects (so it may be shadowed)."""

    side_effect_free = True

    def with_state(self, state: dict[str, Any]) -> ShadowSafe:
        clone = ShadowSafe(state, self.responder)
        clone.queued = self.queued
        return clone


def _guarded(policy: RolloutPolicy = FAST, client: Any = None, **kwargs: Any) -> gr.GuardedClient:
    guard = gr.Guard(canaries=CASES, rollout=policy, **kwargs)
    return guard.wrap(client or DictClient(STATE, responder))


def _propose(guarded: gr.GuardedClient, fail: float, **more: Any) -> gr.Decision:
    patch = [{"op": "replace", "path": "/fail", "value": fail},
             {"op": "replace", "path": "/rev", "value": guarded.state()["rev"] + 1}]
    patch += [{"op": "replace", "path": f"/{k}", "value": v} for k, v in more.items()]
    return guarded.propose({"parent": guarded.version, "patch": patch})


def _traffic(guarded: gr.GuardedClient, calls: int, users: int = 2000, start: int = 0) -> None:
    for i in range(start, start + calls):
        with contextlib.suppress(RuntimeError, gr.GuardrailViolation):
            guarded.invoke(gr.Request(input=f"live {i}", metadata={"user_id": f"u{i % users}"}))
        if guarded._rollout is None:
            return


def _events(ledger: gr.Ledger) -> list[str]:
    return [e.body["action"] for e in ledger.entries() if e.body.get("event") == "rollout"]


def test_an_accepted_candidate_enters_the_rollout_instead_of_being_served() -> None:
    """The gate's acceptance starts attempt 1 at the first step; the incumbent stays served."""
    guarded = _guarded()
    incumbent = guarded.version
    decision = _propose(guarded, 0.0)
    assert decision.accepted and decision.findings[-1].check == "rollout"
    assert guarded.version == incumbent
    status = guarded.rollout_status()
    assert status is not None and status.phase == "step" and status.candidate == decision.candidate
    assert _events(guarded.ledger) == ["start"]


def test_every_response_discloses_the_version_that_answered_and_the_phase() -> None:
    """Candidate-arm answers carry the candidate's version; all carry phase and response id."""
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}))
    decision = _propose(guarded, 0.0)
    seen = {}
    for i in range(400):
        response = guarded.invoke(gr.Request(input="a", metadata={"user_id": f"u{i}"}))
        seen[response.metadata["guardrails.rollout.arm"]] = response
        assert response.metadata["guardrails.served_version"] == response.version
        assert response.metadata["guardrails.rollout.phase"] == "step 0"
        assert response.metadata["guardrails.response_id"]
    assert seen["candidate"].version == decision.candidate
    assert seen["incumbent"].version == guarded.version


def test_a_user_keeps_the_same_version_inside_a_step() -> None:
    """Sticky assignment: the same user id always gets the same arm."""
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}))
    _propose(guarded, 0.0)
    for user in range(50):
        arms = {guarded.invoke(gr.Request(input="a", metadata={"user_id": user})).version
                for _ in range(5)}
        assert len(arms) == 1


def test_a_candidate_worse_on_live_traffic_is_rolled_back() -> None:
    """It passed the canaries; live errors abort it, and every call goes to the incumbent."""
    guarded = _guarded()
    incumbent = guarded.version
    assert _propose(guarded, 0.6).accepted
    _traffic(guarded, 5000)
    status = guarded.rollout_status()
    assert status is not None and status.phase == "aborted"
    assert guarded.version == incumbent and guarded._rollout is None
    assert _events(guarded.ledger)[-1] == "abort"
    assert all(guarded.invoke(gr.Request(input="a", metadata={"user_id": i})).version == incumbent
               for i in range(100))


def test_a_better_candidate_is_promoted_and_the_ledger_serves_it() -> None:
    """Through every step to 100 %: the ledger's last acceptance is the rollout's promotion."""
    guarded = _guarded()
    decision = _propose(guarded, 0.0)
    _traffic(guarded, 20000)
    assert guarded.rollout_status().phase == "promoted"  # type: ignore[union-attr]
    assert guarded.version == decision.candidate == guarded.ledger.served_version()
    assert _events(guarded.ledger) == ["start", "advance", "advance", "advance"]
    last = [e for e in guarded.ledger.entries() if e.type == "decision"][-1]
    assert last.body["decision"]["kind"] == "rollout"


def test_a_retry_after_an_abort_is_a_new_attempt() -> None:
    """Argo #3120: proposing the same candidate again starts a fresh attempt."""
    guarded = _guarded()
    _propose(guarded, 0.0)
    first = guarded.rollout_action("abort", "operator said so")
    retry = _propose(guarded, 0.0)
    assert retry.accepted
    second = guarded.rollout_status()
    assert second is not None and second.phase == "step" and second.attempt != first.attempt


def test_a_second_proposal_during_a_rollout_is_rejected() -> None:
    """One rollout at a time: the store refuses a second start."""
    guarded = _guarded()
    _propose(guarded, 0.0)
    second = _propose(guarded, 0.05)
    assert not second.accepted and second.findings[-1].check == "rollout_busy"


def test_operators_pause_resume_advance_and_abort_and_each_is_ledgered() -> None:
    """rollout_action moves the stored state; a paused rollout does not advance."""
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}))
    _propose(guarded, 0.0)
    assert guarded.rollout_action("pause").phase == "paused"
    with pytest.raises(InvalidTransition):
        guarded.rollout_action("advance")
    guarded.rollout_action("resume")
    assert guarded.rollout_action("advance").step == 1
    assert guarded.rollout_action("abort").phase == "aborted"
    with pytest.raises(LookupError):
        guarded.rollout_action("abort")
    assert _events(guarded.ledger) == ["start", "pause", "resume", "advance", "abort"]


def test_a_step_without_traffic_pauses_at_its_deadline() -> None:
    """Argo #1905, Flagger #1035/#1689: a candidate that gets no traffic is never promoted."""
    policy = FAST.model_copy(update={"step_deadline": 0.05})
    guarded = _guarded(policy)
    _propose(guarded, 0.0)
    time.sleep(0.1)
    state = guarded.rollout_evaluate()
    assert state is not None and state.phase == "paused"
    assert "never a pass" in state.reason


def test_a_safety_policy_blocking_the_candidate_aborts_at_once() -> None:
    """A block of a candidate's answer by a policy named in safety_policies ends the rollout."""
    def no_secrets(request: gr.Request, call_next: Any) -> gr.Response:
        response = call_next(request)
        if "SECRET" in str(response.output):
            raise gr.GuardrailViolation("leaked a secret", policy="no_secrets")
        return response

    policy = FAST.model_copy(update={"safety_policies": ("no_secrets",), "evaluate_every": 1})
    guarded = _guarded(policy, middleware=[no_secrets])
    _propose(guarded, 0.0, say="SECRET ")
    _traffic(guarded, 2000)
    status = guarded.rollout_status()
    assert status is not None and status.phase == "aborted" and "safety" in status.reason


def test_a_candidate_that_changes_itself_while_serving_is_aborted() -> None:
    """A frozen-constraint violation (its state is not the one accepted) aborts at once."""
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}))
    _propose(guarded, 0.0)
    assert guarded._rollout is not None
    guarded._rollout.candidate.mutate_silently("say", "x")
    state = guarded.rollout_evaluate()
    assert state is not None and state.phase == "aborted" and "changed its own state" in state.reason


def test_feedback_is_counted_once_and_nan_is_a_failure() -> None:
    """Flagger #1098 (NaN read as 0): NaN feedback counts as a failure, and a second rating of
    the same response is ignored."""
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}))
    _propose(guarded, 0.0)
    response = guarded.invoke(gr.Request(input="a", metadata={"user_id": "u1"}))
    rid = response.metadata["guardrails.response_id"]
    assert guarded.feedback(rid, math.nan) is True
    assert guarded.feedback(rid, 1.0) is False
    status = guarded.rollout_status()
    assert status is not None
    evidence = guarded.rollout_store.evidence(status, 0.0)
    arm = response.metadata["guardrails.rollout.arm"]
    assert (evidence.step_failures == 1) == (arm == "candidate")


def test_shadow_answers_with_the_incumbent_and_scores_pairs() -> None:
    """In shadow the user always gets the incumbent; the candidate answers copies, then the
    rollout moves to the first step on the pairs."""
    policy = FAST.model_copy(update={"shadow": True, "shadow_fraction": 1.0,
                                     "shadow_concurrency": 64})
    guarded = _guarded(policy, ShadowSafe(STATE, responder))
    incumbent = guarded.version
    _propose(guarded, 0.0)
    assert guarded.rollout_status().phase == "shadow"  # type: ignore[union-attr]
    for i in range(200):
        response = guarded.invoke(gr.Request(input="a", metadata={"user_id": i}))
        if guarded.rollout_status().phase != "shadow":  # type: ignore[union-attr]
            break
        assert response.version == incumbent
        assert response.metadata["guardrails.rollout.phase"] == "shadow"
        time.sleep(0.002)  # let the shadow copies finish
    assert guarded.rollout_status().phase == "step"  # type: ignore[union-attr]


def test_shadow_is_skipped_for_a_client_that_does_not_declare_itself_side_effect_free() -> None:
    """Copies of live calls go only to clients declaring side_effect_free = True."""
    guarded = _guarded(FAST.model_copy(update={"shadow": True}))
    decision = _propose(guarded, 0.0)
    assert any(f.check == "rollout_shadow" for f in decision.findings)
    assert guarded.rollout_status().phase == "step"  # type: ignore[union-attr]


def test_a_follower_replica_serves_the_same_rollout_and_its_rollback(tmp_path: Path) -> None:
    """Two guards on one SQLite ledger: the follower picks up the split and the abort."""
    path = tmp_path / "ledger.sqlite"
    leader = _guarded(FAST.model_copy(update={"min_samples": 10**6}),
                      ledger=gr.SQLiteLedger(path))
    follower = _guarded(FAST.model_copy(update={"min_samples": 10**6}),
                        ledger=gr.SQLiteLedger(path))
    decision = _propose(leader, 0.0)
    follower.sync()
    assert follower._rollout is not None
    for user in range(100):
        request = gr.Request(input="a", metadata={"user_id": user})
        assert leader.invoke(request).version == follower.invoke(request).version
    assert decision.candidate in {follower.invoke(gr.Request(input="a", metadata={"user_id": u})
                                                  ).version for u in range(200)}
    leader.rollout_action("abort")
    follower.sync()
    assert follower._rollout is None


def test_rollout_transitions_emit_metrics_and_spans() -> None:
    """guardrails.rollout.phase, .weight and .aborts (by reason) and a transition span."""
    tracer_provider, exporter, meter_provider, reader = capture_telemetry()
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}),
                       tracer_provider=tracer_provider, meter_provider=meter_provider)
    _propose(guarded, 0.0)
    guarded.rollout_action("abort")
    names = {m.name for rm in reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert {"guardrails.rollout.phase", "guardrails.rollout.weight",
            "guardrails.rollout.aborts"} <= names
    assert "guardrails.rollout.transition" in {s.name for s in exporter.get_finished_spans()}


def test_without_a_rollout_an_accepted_candidate_is_served_at_once() -> None:
    """No [rollout]: the promotion stage promotes as before."""
    guard = gr.Guard(canaries=CASES)
    guarded = guard.wrap(DictClient(STATE, responder))
    decision = _propose(guarded, 0.0)
    assert decision.accepted and guarded.version == decision.candidate


def test_expect_scores_the_answer_given_and_the_shadow_copy() -> None:
    """A label that arrives later scores both sides of a shadow pair: the candidate's wrong
    copy is a regression even though the user only saw the incumbent's right answer."""
    policy = FAST.model_copy(update={"shadow": True, "shadow_fraction": 1.0,
                                     "min_samples": 10**6})
    guarded = _guarded(policy, ShadowSafe({**STATE, "fail": 0.0}, responder))
    _propose(guarded, 0.0, say="X")
    response = guarded.invoke(gr.Request(input="live one", metadata={"user_id": 1}))
    rid = response.metadata["guardrails.response_id"]
    deadline = time.monotonic() + 5
    while rid + ":shadow" not in (guarded._answers or {}) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert response.output == "?"
    assert guarded.expect(rid, "?") == 2
    state = guarded.rollout_evaluate()
    assert state is not None
    assert guarded.rollout_store.evidence(state, 0.0).pairs.regressions == 1
    with pytest.raises(KeyError):
        guarded.expect("not-a-response", "?")


def test_ainvoke_serves_the_split_and_records_the_evidence() -> None:
    """The async twin assigns, discloses and buffers like invoke."""
    import asyncio

    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}))
    decision = _propose(guarded, 0.0)

    async def calls() -> set[str]:
        responses = [await guarded.ainvoke(gr.Request(input="a", metadata={"user_id": u}))
                     for u in range(200)]
        return {r.version for r in responses}

    assert asyncio.run(calls()) == {decision.candidate, guarded.version}
    state = guarded.rollout_evaluate()
    assert state is not None
    assert guarded.rollout_store.count_calls(state.attempt) == 200


def test_a_store_that_cannot_be_written_never_breaks_a_call_nor_advances() -> None:
    """Fault injection: the evidence write fails; calls still answer, the failure is logged,
    the buffered evidence is kept for the next flush, and the rollout stays where it was."""
    from structlog.testing import capture_logs

    guarded = _guarded(FAST.model_copy(update={"min_samples": 1, "evaluate_every": 5}))
    _propose(guarded, 0.0)
    store = guarded.rollout_store

    def broken(rows: Any) -> None:
        raise OSError("disk full")

    store.add_calls = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        for user in range(20):
            guarded.invoke(gr.Request(input="a", metadata={"user_id": user}))
    assert any(e["event"] == "guardrails.rollout_evaluation_failed" for e in logs)
    assert guarded._rollout is not None and len(guarded._rollout._buffer) == 20
    assert guarded.rollout_status().step == 0  # type: ignore[union-attr]


# ------------------------------------------------------------------ shadow failures and late labels

HOLD = threading.Event()
"""Released by a test: until then a held candidate's live answers wait (injected contention)."""


def held(state: dict[str, Any], request: gr.Request) -> Any:
    """``responder``, but a live call of a state with ``hold`` waits for ``HOLD`` and one with
    ``delay`` sleeps that long first (a shadow copy slowed by a busy host)."""
    if str(request.input).startswith("live"):
        if state.get("hold"):
            HOLD.wait(10)
        time.sleep(state.get("delay", 0.0))
    return responder(state, request)


SHADOW = FAST.model_copy(update={"shadow": True, "shadow_fraction": 1.0,
                                 "shadow_concurrency": 64, "min_samples": 10**6,
                                 "evaluate_every": 10**6, "max_consecutive_errors": 5})


def _shadowed(policy: RolloutPolicy, **candidate: Any) -> gr.GuardedClient:
    guarded = _guarded(policy, ShadowSafe({**STATE, "fail": 0.0, "hold": False, "delay": 0.0},
                                          held))
    assert _propose(guarded, candidate.pop("fail", 0.0), **candidate).accepted
    return guarded


def _copies_answered(guarded: gr.GuardedClient, rids: list[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answers = guarded._answers or {}
        if all(rid + ":shadow" in answers and answers[rid + ":shadow"] is not _IN_FLIGHT
               for rid in rids) and len(guarded._rollout._buffer) >= len(rids):  # type: ignore[union-attr]
            return
        time.sleep(0.01)
    raise AssertionError("the shadow copies never answered")


def _shadow_calls(guarded: gr.GuardedClient, n: int) -> list[str]:
    rids = [guarded.invoke(gr.Request(input=f"live {i}", metadata={"user_id": i})
                           ).metadata["guardrails.response_id"] for i in range(n)]
    _copies_answered(guarded, rids)
    return rids


@pytest.mark.parametrize("fault", [{"delay": 0.2}, {"fail": 1.0}], ids=["timeout", "error"])
def test_a_shadow_copy_that_fails_to_answer_counts_against_the_limits_not_as_a_regression(
        fault: dict[str, float]) -> None:
    """A copy that times out (injected delay over latency_limit) or raises is no regression:
    the pair leaves the paired test and the failures reach max_consecutive_errors instead."""
    guarded = _shadowed(SHADOW.model_copy(update={"latency_limit": 0.1}), **fault)
    _shadow_calls(guarded, 5)
    guarded._rollout.flush()  # type: ignore[union-attr]
    attempt = guarded._rollout.state  # type: ignore[union-attr]
    evidence = guarded.rollout_store.evidence(attempt, 0.0)
    assert evidence.pairs.n == 0 and evidence.step_failures == 5
    state = guarded.rollout_evaluate()
    assert state is not None and state.phase == "aborted"
    assert "5 candidate failures in a row" in state.reason


@pytest.mark.parametrize("fault", [{"delay": 0.2}, {"fail": 1.0}], ids=["timeout", "error"])
def test_shadow_failures_pairs_scores_a_failed_copy_as_a_regression(
        fault: dict[str, float]) -> None:
    """With shadow_failures = "pairs" the same copies are regressions in the paired test."""
    guarded = _shadowed(SHADOW.model_copy(update={"latency_limit": 0.1,
                                                  "shadow_failures": "pairs"}), **fault)
    _shadow_calls(guarded, 5)
    guarded._rollout.flush()  # type: ignore[union-attr]
    evidence = guarded.rollout_store.evidence(guarded._rollout.state, 0.0)  # type: ignore[union-attr]
    assert evidence.pairs.regressions == 5


def test_a_label_that_arrives_before_the_shadow_answer_scores_the_pair_before_it_is_judged(
        ) -> None:
    """The copy is held until after its label came (injected contention); the evaluation that
    first sees the pair judges it with the candidate's wrong answer, not as a pass."""
    HOLD.clear()
    guarded = _shadowed(SHADOW, hold=True, say="X")
    response = guarded.invoke(gr.Request(input="live 1", metadata={"user_id": 1}))
    rid = response.metadata["guardrails.response_id"]
    assert guarded.expect(rid, "?") == 1  # the user's answer; the copy's label waits
    HOLD.set()
    _copies_answered(guarded, [rid])
    state = guarded.rollout_evaluate()
    assert state is not None
    assert guarded.rollout_store.evidence(state, 0.0).pairs.regressions == 1


# ------------------------------------------------------------------ output policies on shadow copies

def no_secrets(request: gr.Request, call_next: Any) -> gr.Response:
    """An output policy: blocks an answer that contains SECRET."""
    response = call_next(request)
    if "SECRET" in str(response.output):
        raise gr.GuardrailViolation("leaked a secret", policy="no_secrets")
    return response


def test_an_output_policy_blocking_a_shadow_copy_scores_it_as_a_candidate_failure() -> None:
    """The guard's chain judges the shadow answer as if it were served: a block is a
    regression in the paired test, though the user only ever saw the incumbent."""
    guarded = _guarded(SHADOW, ShadowSafe({**STATE, "fail": 0.0, "hold": False, "delay": 0.0},
                                          held), middleware=[no_secrets])
    assert _propose(guarded, 0.0, say="SECRET ").accepted
    _shadow_calls(guarded, 4)
    guarded._rollout.flush()  # type: ignore[union-attr]
    evidence = guarded.rollout_store.evidence(guarded._rollout.state, 0.0)  # type: ignore[union-attr]
    assert evidence.pairs.regressions == 4 and evidence.safety_violation is None


def test_an_output_policy_blocking_the_incumbent_answer_is_its_side_of_the_pair() -> None:
    """Symmetric: the incumbent's blocked answer is the incumbent's failure (a fix when the
    candidate's copy passed), so blocks never tilt the test against the candidate alone."""
    guarded = _guarded(SHADOW, ShadowSafe({**STATE, "fail": 0.0, "hold": False, "delay": 0.0,
                                           "say": "SECRET "}, held), middleware=[no_secrets])
    assert _propose(guarded, 0.0, say="").accepted
    rids = []
    for i in range(4):
        with pytest.raises(gr.GuardrailViolation):
            guarded.invoke(gr.Request(input=f"live {i}", metadata={"user_id": i}))
        rids.append(next(reversed(guarded._answers or {})).removesuffix(":shadow"))
    deadline = time.monotonic() + 10
    while len(guarded._rollout._buffer) < 4 and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    guarded._rollout.flush()  # type: ignore[union-attr]
    evidence = guarded.rollout_store.evidence(guarded._rollout.state, 0.0)  # type: ignore[union-attr]
    assert evidence.pairs.fixes == 4 and evidence.pairs.regressions == 0


def test_a_safety_policy_blocking_a_shadow_copy_aborts_at_the_next_call() -> None:
    """A safety-policy violation in shadow aborts at once: on the next call, not at the next
    evaluate_every, and before any user was assigned to the candidate."""
    policy = SHADOW.model_copy(update={"safety_policies": ("no_secrets",)})
    guarded = _guarded(policy, ShadowSafe({**STATE, "fail": 0.0, "hold": False, "delay": 0.0},
                                          held), middleware=[no_secrets])
    assert _propose(guarded, 0.0, say="SECRET ").accepted
    rid = guarded.invoke(gr.Request(input="live 1", metadata={"user_id": 1})
                         ).metadata["guardrails.response_id"]
    deadline = time.monotonic() + 10
    while (guarded._answers or {}).get(rid + ":shadow") is _IN_FLIGHT:
        assert time.monotonic() < deadline, "the shadow copy never answered"
        time.sleep(0.01)
    guarded.invoke(gr.Request(input="live 2", metadata={"user_id": 2}))  # evaluate_every: 10**6
    status = guarded.rollout_status()
    assert status is not None and status.phase == "aborted" and status.weight(policy) == 0.0
    assert "'no_secrets' blocked its shadow answer" in status.reason


def test_a_shadow_copy_takes_no_rate_limit_token() -> None:
    """The copy is no call of the user: judging it leaves the user's rate limit untouched."""
    from guardrails_plugins.policies.rate_limit import RateLimit, RateLimitSettings

    limit = RateLimit(RateLimitSettings(requests=3, per_seconds=3600, key="user_id"))
    guarded = _guarded(SHADOW, ShadowSafe({**STATE, "fail": 0.0, "hold": False, "delay": 0.0},
                                          held), middleware=[limit])
    assert _propose(guarded, 0.0).accepted
    rids = [guarded.invoke(gr.Request(input=f"live {i}", metadata={"user_id": "u"})
                           ).metadata["guardrails.response_id"] for i in range(3)]
    _copies_answered(guarded, rids)
    assert not gr.is_shadow_copy()
    with pytest.raises(gr.GuardrailViolation):
        guarded.invoke(gr.Request(input="live 4", metadata={"user_id": "u"}))  # the 4th call
    guarded._rollout.flush()  # type: ignore[union-attr]
    assert guarded.rollout_store.evidence(guarded._rollout.state, 0.0).pairs.n == 3  # type: ignore[union-attr]


# ------------------------------------------------------------------ spans during a rollout

class Declared(DictClient):
    """A client declaring GenAI attributes: its model name is its revision."""

    def genai_attributes(self) -> dict[str, Any]:
        return {"gen_ai.operation.name": "chat", "gen_ai.request.model": f"rev-{self._state['rev']}"}

    def with_state(self, state: dict[str, Any]) -> Declared:
        return Declared(state, self.responder)


def test_each_call_during_a_rollout_says_in_its_spans_which_version_answered_and_the_phase(
        ) -> None:
    """The guard's span carries the answering version, the arm, the phase and the attempt;
    the model call is a GenAI client span of the client that answered, candidate included."""
    tracer_provider, exporter, _, _ = capture_telemetry()
    guarded = _guarded(FAST.model_copy(update={"min_samples": 10**6}),
                       Declared({**STATE, "fail": 0.0}, responder),
                       tracer_provider=tracer_provider)
    incumbent = guarded.version
    candidate = _propose(guarded, 0.0).candidate
    exporter.clear()
    arms = {}
    for i in range(400):
        response = guarded.invoke(gr.Request(input=f"live {i}", metadata={"user_id": i}))
        arms[response.metadata["guardrails.rollout.arm"]] = response.version
        if len(arms) == 2:
            break
    assert arms == {"candidate": candidate, "incumbent": incumbent}
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.attributes.get("guardrails.rollout.arm")]
    assert {(s.attributes["guardrails.rollout.arm"], s.attributes["guardrails.version"])
            for s in calls} == {("candidate", candidate), ("incumbent", incumbent)}
    assert all(s.attributes["guardrails.rollout.phase"] == "step 0" for s in calls)
    models = {s.attributes.get("gen_ai.request.model") for s in spans
              if s.name.startswith("chat ")}
    assert models == {"rev-0", "rev-1"}


def test_a_candidate_slower_on_live_calls_is_rolled_back_by_the_latency_test() -> None:
    """Injected 20 ms on the candidate's live calls, far under latency_limit: the split's
    latency pairs abort the rollout (rollout_slower) at the first step."""
    policy = FAST.model_copy(update={"latency_margin": 0.3, "min_samples": 20,
                                     "steps": (50, 100)})
    guarded = _guarded(policy, DictClient({**STATE, "fail": 0.0, "hold": False, "delay": 0.0},
                                          held))
    assert _propose(guarded, 0.0, delay=0.02).accepted
    _traffic(guarded, 2000)
    status = guarded.rollout_status()
    assert status is not None and status.phase == "aborted", status
    assert "slower than the incumbent" in status.reason
