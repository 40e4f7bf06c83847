"""The DSPy adapter: an optimiser's compile result is gated before it serves (DSPy's DummyLM)."""

from __future__ import annotations

import asyncio
from typing import Any

import dspy
import pytest
from adapter_cases import QA_TRAIN, dspy_client, dummy_lm
from dspy.utils import DummyLM
from guardrails_plugins.adapters import AdapterMismatch
from guardrails_plugins.adapters.dspy import DSPyProgramClient

import guardrails as gr
from guardrails.testing import capture_telemetry


def qa_suite() -> list[gr.CanaryCase]:
    return [gr.CanaryCase(id=f"qa-{i}", input=q, expect=a) for i, (q, a) in enumerate(QA_TRAIN)]


def test_the_state_is_the_programs_saved_state() -> None:
    client = dspy_client()
    state = client.snapshot()
    assert state["module"] == "dspy.predict.predict.Predict"
    assert state["program"]["demos"] == []
    assert "instructions" in state["program"]["signature"]


def test_a_recompiled_program_that_answers_better_is_accepted() -> None:
    """The uncompiled program cannot answer (the dummy LM follows demos only); LabeledFewShot on
    correct labels adds demos; the guard evaluates the recompiled program and serves it."""
    guarded = gr.Guard(canaries=qa_suite()).wrap(dspy_client(lm=dummy_lm()))
    decision = guarded.self_improve()
    assert decision is not None and decision.accepted, decision
    assert decision.kind == "demos" and decision.source == "dspy.LabeledFewShot"
    assert len(guarded.state()["program"]["demos"]) == len(QA_TRAIN)
    assert guarded.invoke("2+2").output == "4"
    assert asyncio.run(guarded.ainvoke({"question": "capital of France"})).output == "Paris"


def test_a_recompiled_program_trained_on_bad_labels_is_rejected() -> None:
    """Compiling on mislabelled examples would make the program repeat them; the canaries catch
    it and the serving program keeps its demos."""
    good = dspy_client(lm=dummy_lm())
    guarded = gr.Guard(canaries=qa_suite()).wrap(good)
    assert guarded.self_improve() is not None  # the good compile, accepted
    served = guarded.state()
    bad = dspy.LabeledFewShot(k=3).compile(
        dspy.Predict("question -> answer"),
        trainset=[dspy.Example(question=q, answer="42").with_inputs("question") for q, _ in QA_TRAIN])
    proposal = guarded.client.proposal_for(bad, rationale="recompiled on last week's feedback")
    assert proposal is not None and proposal.kind == "demos"
    decision = guarded.propose(proposal)
    assert decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check in {"capability", "smoke"}
    assert guarded.state() == served
    assert guarded.invoke("2+2").output == "4"


def test_an_instruction_rewrite_is_a_prompt_proposal() -> None:
    """An optimiser that rewrites the signature's instructions yields kind 'prompt'."""
    client = dspy_client()
    rewritten = client.program.deepcopy()
    rewritten.signature = rewritten.signature.with_instructions("Answer with one word.")
    proposal = client.proposal_for(rewritten)
    assert proposal is not None and proposal.kind == "prompt"
    assert [op.path for op in proposal.patch] == ["/program/signature/instructions"]
    assert client.with_state(proposal.apply(client.snapshot())).program.signature.instructions \
        == "Answer with one word."


def test_no_optimizer_or_no_change_proposes_nothing() -> None:
    assert dspy_client(trainset=[]).propose_update() is None
    client = dspy_client()
    assert client.proposal_for(client.program) is None


def test_states_of_another_module_or_shape_are_refused() -> None:
    client = dspy_client()
    state = client.snapshot()
    with pytest.raises(ValueError, match="module"):
        client.with_state({**state, "module": "my_app.Other"})
    with pytest.raises(ValueError, match="exactly the keys"):
        client.with_state({**state, "extra": 1})
    with pytest.raises(ValueError, match=r"does not load|round-trip"):
        client.with_state({**state, "program": {"signature": {"instructions": "x"}}})


def test_usage_and_span_through_the_guard() -> None:
    tracer_provider, exporter, meter_provider, _ = capture_telemetry()
    guarded = gr.Guard(canaries=qa_suite(), tracer_provider=tracer_provider,
                       meter_provider=meter_provider).wrap(dspy_client())
    assert guarded.invoke("colour of the sky").output == "blue"
    (span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert span.name == "invoke_agent dummy"
    assert span.attributes["gen_ai.provider.name"] == "dspy"


class DownForDemos(DummyLM):
    """Answers by question, but its provider is unreachable for prompts with demos (so only a
    recompiled program's calls fail)."""

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        if messages is not None and len(messages) > 2:
            raise ConnectionError("provider unreachable")
        return super().forward(prompt=prompt, messages=messages, **kwargs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_lm_errors_surface_unchanged_and_count_as_failed_cases() -> None:
    """On the serving path the LM's ConnectionError reaches the caller unchanged (sync and
    async); in the canaries the candidate's errors are failures: rejected, never accepted."""
    lm = DownForDemos({q: {"answer": a} for q, a in QA_TRAIN})
    guarded = gr.Guard(canaries=qa_suite()).wrap(dspy_client(lm=lm))
    assert guarded.invoke("2+2").output == "4"
    decision = guarded.self_improve()  # the recompiled program has demos: its calls fail
    assert decision is not None and decision.verdict is gr.Verdict.REJECTED
    assert decision.deciding_finding is not None
    assert decision.deciding_finding.check in {"capability", "smoke"}
    served = guarded.state()
    assert guarded.state() == served
    broken = guarded.client.with_state(guarded.ledger.get_state(decision.candidate or ""))
    serving_broken = gr.Guard(canaries=qa_suite()).wrap(broken)
    with pytest.raises(ConnectionError, match="provider unreachable"):
        serving_broken.invoke("2+2")
    with pytest.raises(ConnectionError, match="provider unreachable"):
        asyncio.run(serving_broken.ainvoke("2+2"))


def test_a_string_input_needs_a_single_input_field() -> None:
    client = DSPyProgramClient(dspy.Predict("question, context -> answer"), lm=dummy_lm())
    with pytest.raises(ValueError, match="several input fields"):
        client.invoke(gr.Request(input="2+2"))


def test_a_river_model_given_to_dspy_names_the_river_adapter() -> None:
    from river import linear_model

    with pytest.raises(AdapterMismatch) as caught:
        DSPyProgramClient(linear_model.LogisticRegression())
    assert caught.value.suggestion == "river"
    assert "'dump_state()'" in str(caught.value)
