"""``UnusableResponseError``: the caller sees it, telemetry records it, a canary counts it as an
error and never as an answer (issue 14)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import guardrails as gr
from guardrails.testing import DictClient, capture_telemetry

CASES = 8


def garbage_responder(state: dict[str, Any], request: gr.Request) -> Any:
    """Answers ``a{i}`` to ``q{i}``, except for the inputs listed in ``state["unusable"]``."""
    if request.input in state.get("unusable", []):
        raise gr.UnusableResponseError("the fake adapter got an unusable response: no choices",
                                       adapter="fake", reason="no_choices")
    return "a" + str(request.input)[1:]


def client(unusable: list[str] | None = None, **extra: Any) -> DictClient:
    return DictClient({"unusable": unusable or [], **extra}, garbage_responder)


def capability_suite(n: int = CASES) -> gr.CanarySuite:
    return gr.CanarySuite([gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}")
                           for i in range(n)])


def run(candidate: Any, incumbent: Any, suite: gr.CanarySuite) -> gr.CanaryEvidence:
    from guardrails.canary import run_canaries_async

    return asyncio.run(run_canaries_async(candidate, incumbent, suite, case_timeout=5.0,
                                          settings=gr.RunSettings(smoke_cases=0), seed=7))


def metric_points(reader: Any, name: str) -> list[Any]:
    return [point for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics for metric in scope.metrics
            if metric.name == name for point in metric.data.data_points]


def test_the_error_is_public_typed_and_not_transient() -> None:
    """It is a GuardrailsError exported from the package, carries adapter and reason, and the
    canary runner does not retry it (the same model answers the same input the same way)."""
    exc = gr.UnusableResponseError("what was wrong", adapter="openai", reason="no_choices")
    assert isinstance(exc, gr.GuardrailsError)
    assert (exc.adapter, exc.reason, exc.transient) == ("openai", "no_choices", False)
    assert "UnusableResponseError" in gr.__all__


def test_the_error_survives_pickling() -> None:
    """Raised on a Dask worker or in a child process, it arrives with its adapter and reason."""
    import pickle

    exc = pickle.loads(pickle.dumps(
        gr.UnusableResponseError("no choices", adapter="openai", reason="no_choices")))
    assert isinstance(exc, gr.UnusableResponseError)
    assert (str(exc), exc.adapter, exc.reason) == ("no choices", "openai", "no_choices")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_runtime_caller_sees_the_typed_error_recorded_as_a_client_error(mode: str) -> None:
    """invoke and ainvoke raise the adapter's UnusableResponseError unchanged; it is counted as
    an 'error' outcome, marks the guard's span as failed, and is logged once with the adapter
    and the reason (not the message)."""
    tracer_provider, exporter, meter_provider, reader = capture_telemetry()
    guarded = gr.Guard(canaries=capability_suite(), tracer_provider=tracer_provider,
                       meter_provider=meter_provider).wrap(client(["q1"]))
    with capture_logs() as logs, pytest.raises(gr.UnusableResponseError) as caught:
        if mode == "sync":
            guarded.invoke("q1")
        else:
            asyncio.run(guarded.ainvoke("q1"))
    assert caught.value.reason == "no_choices"
    outcomes = {p.attributes["guardrails.outcome"]: p.value
                for p in metric_points(reader, "guardrails.invocations")}
    assert outcomes == {"error": 1}
    (span,) = [s for s in exporter.get_finished_spans() if s.attributes.get("error.type")]
    assert span.attributes["error.type"] == "UnusableResponseError"
    assert span.status.status_code.name == "ERROR"
    (line,) = [entry for entry in logs if entry["event"] == "guardrails.call_failed"]
    assert line["error_type"] == "UnusableResponseError"
    assert (line["adapter"], line["reason"], line["version"]) == ("fake", "no_choices",
                                                                  guarded.version)
    assert "no choices" not in str(line)  # the message stays out of the log
    assert guarded.invoke("q2").output == "a2"


def test_an_unusable_candidate_answer_is_an_error_not_an_answer() -> None:
    """A candidate call raising UnusableResponseError is a failed, unanswered case naming the
    error, called once (not retried); the incumbent's pair is unaffected."""
    candidate = client(["q0", "q3"])
    evidence = run(candidate, client(), capability_suite())
    by_id = {o.case_id: o for o in evidence.outcomes}
    for case_id in ("c0", "c3"):
        outcome = by_id[case_id]
        assert not outcome.candidate_answered and not outcome.candidate_passed
        assert outcome.candidate_error == "client raised UnusableResponseError"
        assert outcome.incumbent_answered and outcome.incumbent_passed is True
    assert sum(1 for r in candidate.calls if r.input in ("q0", "q3")) == 2
    assert all(o.candidate_answered for o in evidence.outcomes if o.case_id not in ("c0", "c3"))


def test_an_unusable_incumbent_answer_leaves_its_result_unknown() -> None:
    """An incumbent call raising UnusableResponseError is unanswered with its result unknown
    (None), never a pass or a fail the decision could lean on."""
    evidence = run(client(), client(["q2"]), capability_suite())
    (outcome,) = [o for o in evidence.outcomes if o.case_id == "c2"]
    assert not outcome.incumbent_answered and outcome.incumbent_passed is None
    assert outcome.incumbent_error == "client raised UnusableResponseError"
    assert outcome.candidate_answered and outcome.candidate_passed


@settings(max_examples=25, deadline=None)
@given(cand=st.sets(st.integers(0, CASES - 1)), inc=st.sets(st.integers(0, CASES - 1)))
def test_no_unusable_call_is_ever_counted_as_an_answer(cand: set[int], inc: set[int]) -> None:
    """For any cases on which either side answers unusably, exactly those calls are
    unanswered errors, a candidate's never passes and an incumbent's is unknown."""
    evidence = run(client([f"q{i}" for i in cand]), client([f"q{i}" for i in inc]),
                   capability_suite())
    assert len(evidence.outcomes) == CASES
    for outcome in evidence.outcomes:
        i = int(outcome.case_id[1:])
        assert outcome.candidate_answered is (i not in cand)
        assert outcome.incumbent_answered is (i not in inc)
        if i in cand:
            assert not outcome.candidate_passed and outcome.candidate_error
        if i in inc:
            assert outcome.incumbent_passed is None and outcome.incumbent_error


def test_a_candidate_answering_only_unusably_is_never_accepted() -> None:
    """A proposal whose client answers every case unusably is not accepted, and the
    incumbent keeps serving."""
    guarded = gr.Guard(canaries=capability_suite()).wrap(client())
    before = guarded.version
    decision = guarded.propose(gr.UpdateProposal(parent=before, patch=[
        {"op": "replace", "path": "/unusable", "value": [f"q{i}" for i in range(CASES)]}]))
    assert decision.verdict is not gr.Verdict.ACCEPTED
    assert guarded.version == before and guarded.invoke("q1").output == "a1"
