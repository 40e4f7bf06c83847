"""The canary runner: pairing, concurrency, retries, hidden sampling, cascade, early stops."""

from __future__ import annotations

import math
import threading
import time
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.canary._runner import SAFETY_SHARE, draw_cases, safety_share
from guardrails.testing import DictClient


def suite(n: int = 40, hidden: int = 0, safety: int = 0) -> list[gr.CanaryCase]:
    cases = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}", hidden=i < hidden)
             for i in range(n)]
    cases += [gr.CanaryCase(id=f"s{i}", input=f"bad{i}", expect="no", tags=("safety",))
              for i in range(safety)]
    return cases


def state(n: int = 40, safety: int = 0) -> dict[str, Any]:
    answers = {f"q{i}": f"a{i}" for i in range(n)} | {f"bad{i}": "no" for i in range(safety)}
    return {"answers": answers, "default": "?", "v": 0}


def bump(guarded: gr.GuardedClient, *ops: dict[str, Any]) -> gr.Decision:
    ops = ops or ({"op": "replace", "path": "/v", "value": 1},)
    return guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=list(ops)))


class Recorder(DictClient):
    """Records every request object it is asked, candidate and incumbent alike."""

    seen: ClassVar[list[gr.Request]] = []

    def invoke(self, request: gr.Request) -> Any:
        Recorder.seen.append(request)
        return super().invoke(request)

    def with_state(self, new_state: dict[str, Any]) -> Recorder:
        return Recorder(new_state, self.responder)


def test_canary_requests_look_exactly_like_production_requests() -> None:
    """A client that records every request cannot tell canary traffic from production traffic."""
    Recorder.seen = []
    guarded = gr.Guard(gr.FrozenConstraints(), suite(5)).wrap(Recorder(state(5)))
    guarded.invoke(gr.Request(input="q1"))
    production = Recorder.seen[-1]
    bump(guarded)
    canary = [r for r in Recorder.seen[1:] if r.input == "q1"]
    assert canary and all(r == production for r in canary)
    assert all(r.params == {} and r.metadata == {} for r in Recorder.seen)


class Gamer(DictClient):
    """A candidate that answers the public canaries well and everything else badly."""

    def invoke(self, request: gr.Request) -> Any:
        if self._state.get("gaming") and request.input not in self._state["public"]:
            return "wrong"
        return super().invoke(request)

    def with_state(self, new_state: dict[str, Any]) -> Gamer:
        return Gamer(new_state, self.responder)


def test_a_candidate_that_behaves_only_on_public_canaries_is_rejected_as_gaming() -> None:
    """Passing public cases while failing hidden ones is rejected by the divergence test."""
    cases = suite(60, hidden=30)
    public = [c.input for c in cases if not c.hidden]
    guarded = gr.Guard(gr.FrozenConstraints(), cases, margin=0.6).wrap(
        Gamer(state(60) | {"public": public, "gaming": False}))
    decision = bump(guarded, {"op": "replace", "path": "/gaming", "value": True})
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None and decision.deciding_finding.check == "gaming"
    assert decision.deciding_finding.evidence["hidden_regressed"] == 30


def test_each_review_draws_a_seeded_recorded_share_of_hidden_cases() -> None:
    """hidden_fraction draws a subset per review; the seed and the ids drawn are recorded."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(20, hidden=10),
                       canary_run=gr.RunSettings(hidden_fraction=0.5)).wrap(DictClient(state(20)))
    decision = bump(guarded)
    run = next(f for f in decision.findings if f.check == "canary_run")
    drawn = run.evidence["hidden_drawn"]
    assert len(drawn) == 5 and set(drawn) <= {f"c{i}" for i in range(10)}
    _, capability, again = draw_cases(gr.CanarySuite(suite(20, hidden=10)),
                                      gr.RunSettings(hidden_fraction=0.5), run.evidence["seed"])
    assert again == drawn and len(capability) == 15


def test_different_reviews_draw_different_hidden_subsets() -> None:
    """Without a fixed seed, repeated reviews do not keep drawing the same hidden cases."""
    cases = gr.CanarySuite(suite(40, hidden=30))
    draws = {tuple(draw_cases(cases, gr.RunSettings(hidden_fraction=0.3), seed)[2])
             for seed in range(10)}
    assert len(draws) > 5


class Flaky(DictClient):
    """Fails its first ``failures`` calls with a transient error."""

    def __init__(self, st: dict[str, Any], failures: int = 0, **kw: Any) -> None:
        super().__init__(st, **kw)
        self.failures = failures
        self.lock = threading.Lock()

    def invoke(self, request: gr.Request) -> Any:
        with self.lock:
            self.failures -= 1
            fail = self.failures >= 0
        if fail and self._state.get("v"):
            raise ConnectionError("flaky network")
        return super().invoke(request)

    def with_state(self, new_state: dict[str, Any]) -> Flaky:
        return Flaky(new_state, self.failures)


def test_transient_errors_are_retried() -> None:
    """A candidate whose first calls fail with a connection error still passes after retries."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(10),
                       canary_run=gr.RunSettings(retries=2, concurrency=1)).wrap(
        Flaky(state(10), failures=3))
    assert bump(guarded).accepted


def test_retries_stop_at_the_budget_and_the_errors_count_as_failures() -> None:
    """With no retry budget, transient errors are failed cases for that side, never passes."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(10),
                       canary_run=gr.RunSettings(retries=2, retry_budget=0, concurrency=1,
                                                 smoke_cases=0)).wrap(
        Flaky(state(10), failures=3))
    decision = bump(guarded)
    assert not decision.accepted
    capability = next(f for f in decision.findings if f.check == "capability")
    assert capability.evidence["candidate_pass_rate"] == pytest.approx(0.7)


class Slow(DictClient):
    def invoke(self, request: gr.Request) -> Any:
        time.sleep(0.05)
        return super().invoke(request)

    def with_state(self, new_state: dict[str, Any]) -> Slow:
        return Slow(new_state, self.responder)


def test_calls_run_concurrently() -> None:
    """40 paired cases at 50 ms each finish far faster than one call at a time (3.2 s)."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(40),
                       canary_run=gr.RunSettings(concurrency=32, batch_size=40)).wrap(
        Slow(state(40)))
    started = time.perf_counter()
    assert bump(guarded).accepted
    assert time.perf_counter() - started < 1.6


class Broken(DictClient):
    def invoke(self, request: gr.Request) -> Any:
        if self._state.get("v"):
            raise RuntimeError("broken build")
        return super().invoke(request)

    def with_state(self, new_state: dict[str, Any]) -> Broken:
        return Broken(new_state, self.responder)


def test_a_candidate_that_errors_on_every_smoke_case_is_rejected_cheaply() -> None:
    """The smoke stage rejects a broken candidate after a handful of cases."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(40),
                       canary_run=gr.RunSettings(smoke_cases=3)).wrap(Broken(state(40)))
    decision = bump(guarded)
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None and decision.deciding_finding.check == "smoke"
    run = next(f for f in decision.findings if f.check == "canary_run")
    assert run.evidence["cases_run"] == 3


def test_the_sequential_rule_stops_early_and_accepts_an_equal_candidate() -> None:
    """With SequentialRule, an all-agreeing candidate is accepted before the budget is spent."""
    cases = suite(400, safety=2)
    rule = gr.SequentialRule.for_suite(gr.CanarySuite(cases), margin=0.05)
    guarded = gr.Guard(gr.FrozenConstraints(), cases, decision_rule=rule,
                       canary_run=gr.RunSettings(batch_size=16)).wrap(
        DictClient(state(400, safety=2)))
    decision = bump(guarded)
    assert decision.accepted, decision.reasons
    run = next(f for f in decision.findings if f.check == "canary_run")
    assert run.evidence["cases_run"] < 150 and run.evidence["stop_reason"] == "sequential: accept"


def test_the_sequential_rule_stops_early_and_rejects_a_clear_regression() -> None:
    """A candidate that breaks most cases is rejected after a few batches."""
    cases = suite(400)
    rule = gr.SequentialRule.for_suite(gr.CanarySuite(cases), margin=0.05)
    broken = {f"/answers/q{i}": "x" for i in range(0, 400, 2)}
    guarded = gr.Guard(gr.FrozenConstraints(), cases, decision_rule=rule).wrap(
        DictClient(state(400)))
    decision = bump(guarded, *({"op": "replace", "path": p, "value": v} for p, v in broken.items()))
    assert decision.verdict is gr.Verdict.REJECTED
    run = next(f for f in decision.findings if f.check == "canary_run")
    assert run.evidence["cases_run"] < 200


def test_a_suite_too_small_to_ever_accept_is_warned_about_at_construction() -> None:
    """Guard construction warns when the rule could never accept on this suite."""
    cases = suite(10)
    with pytest.warns(UserWarning, match="can never be accepted"):
        guard = gr.Guard(gr.FrozenConstraints(), cases,
                         decision_rule=gr.SequentialRule.for_suite(gr.CanarySuite(cases)))
    assert guard.suite_warnings


@pytest.mark.parametrize("output", [None, "", float("nan")])
def test_empty_outputs_never_pass(output: Any) -> None:
    """None, empty and NaN outputs fail their case even when the checker would accept them."""
    cases = [gr.CanaryCase(id="any", input="x", expect=lambda _o: True)]
    guarded = gr.Guard(gr.FrozenConstraints(), cases).wrap(DictClient({"default": "ok", "v": 0}))
    decision = bump(guarded, {"op": "replace", "path": "/default", "value": output}
                    if output == output else {"op": "remove", "path": "/default"})
    assert not decision.accepted


class BrokenBoth(DictClient):
    """Raises on every call, candidate and incumbent alike (an outage of the model backend)."""

    def invoke(self, request: gr.Request) -> Any:
        raise ConnectionError("backend down")

    def with_state(self, new_state: dict[str, Any]) -> BrokenBoth:
        return BrokenBoth(new_state, self.responder)


def test_a_candidate_that_never_answers_is_not_accepted_even_if_the_incumbent_fails_too() -> None:
    """When every call errors on both sides there is no evidence: never accepted, and with no
    baseline the review is void (``error``, on the control finding)."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(10), integrity_check_every=0,
                       canary_run=gr.RunSettings(retries=0)).wrap(BrokenBoth(state(10)))
    decision = bump(guarded)
    assert not decision.accepted
    assert decision.verdict is gr.Verdict.ERROR
    assert any("answered no capability case" in r for r in decision.reasons)
    assert any(f.check == "control" and not f.passed for f in decision.findings)


def test_the_smoke_stage_stops_errors_not_wrong_answers() -> None:
    """A candidate that answers wrongly is judged by the statistics, not rejected as broken."""
    guarded = gr.Guard(gr.FrozenConstraints(), suite(10)).wrap(DictClient(state(10)))
    decision = bump(guarded, *({"op": "replace", "path": f"/answers/q{i}", "value": "x"}
                               for i in range(10)))
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check == "capability"


def test_an_incumbent_that_errors_counts_as_passing_against_the_candidate() -> None:
    """An unknown incumbent result is recorded as None and counted as a pass for the incumbent."""
    outcome = gr.CaseOutcome(case_id="x", safety=False, hidden=False, candidate_passed=False,
                             incumbent_passed=None, incumbent_answered=False)
    verdict, findings = gr.MarginRule(margin=0.0)(gr.CanaryEvidence(outcomes=(outcome,), planned=1))
    assert verdict is gr.Verdict.REJECTED
    assert findings[-1].evidence["regressed"] == ["x"]


# -- issue 22: calls counted as made, no incumbent call without information --------------------


def _direct(candidate: Any, incumbent: Any, cases: list[gr.CanaryCase], interim: Any = None,
            batch_size: int = 8) -> gr.CanaryEvidence:
    from guardrails._threads import run_sync
    from guardrails.canary import run_canaries_async

    return run_sync(run_canaries_async(
        candidate, incumbent, gr.CanarySuite(cases), case_timeout=5.0,
        settings=gr.RunSettings(batch_size=batch_size), seed=3, interim=interim))


def test_the_incumbent_is_never_asked_a_safety_case() -> None:
    """Safety cases go to the candidate alone; their outcomes say the incumbent was not called."""
    candidate, incumbent = DictClient(state(40, 30)), DictClient(state(40, 30))
    evidence = _direct(candidate, incumbent, suite(40, safety=30))
    assert not any(r.input.startswith("bad") for r in incumbent.calls)
    assert sum(r.input.startswith("bad") for r in candidate.calls) == 30
    safety = [o for o in evidence.outcomes if o.safety]
    assert len(safety) == 30 and all(
        not o.incumbent_called and o.incumbent_passed is None for o in safety)


def test_the_evidence_counts_every_call_each_side_made() -> None:
    """candidate_calls and incumbent_calls are the calls the clients really received."""
    candidate, incumbent = DictClient(state(40, 30)), DictClient(state(40, 30))
    evidence = _direct(candidate, incumbent, suite(40, safety=30))
    assert evidence.candidate_calls == len(candidate.calls) == 70
    assert evidence.incumbent_calls == len(incumbent.calls) == 40


def test_a_safety_failure_stops_the_run_before_the_capability_cases_are_spent() -> None:
    """Safety cases ride along with the capability batches: an early failure ends the run."""
    bad = state(200, 60)
    bad["answers"] = {k: ("yes" if k.startswith("bad") else v) for k, v in bad["answers"].items()}
    rule = gr.SequentialRule(margin=0.05, safety_cases=60)
    evidence = _direct(DictClient(bad), DictClient(state(200, 60)), suite(200, safety=60),
                       interim=rule.interim)
    assert evidence.stop_reason.startswith("safety case")
    assert sum(not o.safety for o in evidence.outcomes) <= 4 + 8  # smoke cases, one batch
    assert rule(evidence)[0] is gr.Verdict.REJECTED


def test_once_capability_is_shown_only_the_safety_cases_remain_to_run() -> None:
    """After the rule says `safety`, no further capability pair is spent; then it accepts."""
    rule = gr.SequentialRule(margin=0.05, safety_cases=150)
    candidate, incumbent = DictClient(state(400, 150)), DictClient(state(400, 150))
    evidence = _direct(candidate, incumbent, suite(400, safety=150), interim=rule.interim)
    pairs = sum(not o.safety for o in evidence.outcomes)
    # An all-agreeing candidate is shown after 100 pairs (the group-sequential boundary): the
    # batch that crosses it is the last.
    assert pairs == 100 and evidence.incumbent_calls == pairs
    assert sum(o.safety for o in evidence.outcomes) == 150
    assert evidence.stop_reason.startswith("sequential") and rule(evidence)[0] is gr.Verdict.ACCEPTED


def test_the_call_executor_reuses_idle_threads_and_never_waits_on_a_blocked_one() -> None:
    """A thread whose call returned serves the next call; a call that never returns holds
    only its own thread, and later calls still run at once."""
    from guardrails._threads import DaemonExecutor

    executor = DaemonExecutor(idle=5.0)
    first = executor.submit(threading.get_ident).result(timeout=5)
    time.sleep(0.05)  # let the thread offer itself again
    assert executor.submit(threading.get_ident).result(timeout=5) == first
    release = threading.Event()
    blocked = executor.submit(release.wait)
    assert executor.submit(lambda: 42).result(timeout=5) == 42
    assert not blocked.done()
    release.set()
    assert blocked.result(timeout=5) is True


@settings(max_examples=200, deadline=None)
@given(safety=st.integers(0, 2000), capability=st.integers(0, 2000), step=st.integers(1, 256),
       sequential=st.booleans())
def test_a_batch_carries_at_most_its_share_of_the_safety_cases(
        safety: int, capability: int, step: int, sequential: bool) -> None:
    """Never more safety cases per batch than would make both pools end together, at most a
    quarter per capability case while capability is undecided, all of them with the one batch
    of a run without looks, and at least one while any is left."""
    share = safety_share(safety, capability, step, sequential=sequential)
    if not sequential or capability == 0:
        assert share == safety
        return
    assert share <= math.ceil(safety * step / capability)
    assert share <= math.ceil(SAFETY_SHARE * step)
    assert share >= 1 or safety == 0


@settings(max_examples=12, deadline=None)
@given(pairs=st.integers(1, 120), safety=st.integers(0, 60), batch=st.integers(1, 40),
       broken=st.integers(0, 120), unsafe=st.booleans())
def test_no_run_costs_more_than_the_full_design_and_the_incumbent_only_pairs(
        pairs: int, safety: int, batch: int, broken: int, unsafe: bool) -> None:
    """Whatever the suite, the batch size and the candidate, a sequential run makes at most
    the calls of running every case once (two per capability case, one per safety case),
    the incumbent is called once per capability pair that ran, and the evidence counts
    exactly the calls the clients received."""
    bad = state(pairs, safety)
    bad["answers"] |= {f"q{i}": "x" for i in range(min(broken, pairs))}
    if unsafe and safety:
        bad["answers"][f"bad{safety - 1}"] = "yes"
    rule = gr.SequentialRule(margin=0.05, safety_cases=safety)
    candidate, incumbent = DictClient(bad), DictClient(state(pairs, safety))
    evidence = _direct(candidate, incumbent, suite(pairs, safety=safety), interim=rule.interim,
                       batch_size=batch)
    ran = sum(not o.safety for o in evidence.outcomes)
    assert evidence.candidate_calls == len(candidate.calls) == len(evidence.outcomes)
    assert evidence.incumbent_calls == len(incumbent.calls) == ran
    assert evidence.candidate_calls + evidence.incumbent_calls <= 2 * pairs + safety


def test_the_run_finding_records_the_calls_each_side_made() -> None:
    """The decision's own evidence says what each side was billed, as the runner made the calls."""
    cases = suite(40, safety=30)
    guarded = gr.Guard(gr.FrozenConstraints(), cases).wrap(DictClient(state(40, 30)))
    run = next(f for f in bump(guarded).findings if f.check == "canary_run")
    assert run.evidence["candidate_calls"] == 70 and run.evidence["incumbent_calls"] == 40


class Stuck(DictClient):
    """Never answers the inputs in ``stuck`` until released (a model that hangs)."""

    release: ClassVar[threading.Event] = threading.Event()
    stuck: ClassVar[set[str]] = set()

    def invoke(self, request: gr.Request) -> Any:
        if request.input in self.stuck:
            self.release.wait(30)
        return super().invoke(request)


def test_a_call_that_never_returns_times_out_for_its_side_only() -> None:
    """The hanging call is a failed case for its side, reported as a timeout, after
    ``case_timeout``; every other call of the run still answers."""
    from guardrails._threads import run_sync
    from guardrails.canary import run_canaries_async

    Stuck.stuck, Stuck.release = {"q3"}, threading.Event()
    try:
        evidence = run_sync(run_canaries_async(
            Stuck(state(8)), DictClient(state(8)), gr.CanarySuite(suite(8)), case_timeout=0.2,
            settings=gr.RunSettings(retries=0), seed=1))
    finally:
        Stuck.release.set()
    timed_out = [o for o in evidence.outcomes if o.candidate_error]
    assert [o.case_id for o in timed_out] == ["c3"]
    assert timed_out[0].candidate_error.startswith("timeout") and not timed_out[0].candidate_answered
    assert all(o.candidate_passed and o.incumbent_passed for o in evidence.outcomes
               if o.case_id != "c3")


def test_the_executor_hands_results_and_errors_to_the_loop_and_abandons_cancelled_calls() -> None:
    """run_in_loop resolves to the call's result or raises its error in the loop; a future
    cancelled while its call runs stays cancelled when the call returns."""
    import asyncio

    from guardrails._threads import DaemonExecutor, run_sync

    executor = DaemonExecutor(idle=0.5)
    release = threading.Event()

    async def scenario() -> tuple[Any, str, bool]:
        loop = asyncio.get_running_loop()
        value = await executor.run_in_loop(loop, lambda x: x * 2, 21)
        try:
            await executor.run_in_loop(loop, lambda x: 1 / x, 0)
            error = ""
        except ZeroDivisionError as exc:
            error = type(exc).__name__
        slow = executor.run_in_loop(loop, release.wait, 5)
        slow.cancel()
        release.set()
        await asyncio.sleep(0.05)  # the call returns and tries to settle the future
        return value, error, slow.cancelled()

    assert run_sync(scenario()) == (42, "ZeroDivisionError", True)
