"""Every adapter raises ``guardrails.UnusableResponseError`` on an unusable response (issue 14).

The OpenAI adapter is exercised with the real SDK against the loopback server answering HTTP 200
bodies that are not usable completions: at run time (sync and async) the caller gets the typed
error, and a review while the server answers garbage accepts nothing, while the incumbent keeps
serving; once the server is healthy the same good change is accepted.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import dspy
import numpy as np
import openai
import pytest
from adapter_cases import (
    BRIEF_PROMPT,
    blobs_data,
    dspy_client,
    dspy_empty_lm,
    river_client,
    sklearn_client,
)
from guardrails_plugins.adapters.langchain import LangChainAgentClient
from guardrails_plugins.adapters.langchain_testing import RuleChatModel
from guardrails_plugins.adapters.openai import OpenAIChatClient
from guardrails_plugins.adapters.openai_testing import (
    UNUSABLE_KINDS,
    FakeOpenAIServer,
    RawBody,
    unusable_body,
)
from guardrails_plugins.adapters.sklearn import SklearnOnlineClient
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from sklearn.linear_model import SGDClassifier, SGDRegressor
from structlog.testing import capture_logs

import guardrails as gr
from guardrails.testing import capture_telemetry

REASONS = {"wrong_schema": "wrong_schema", "not_an_object": "wrong_schema",
           "no_choices": "no_choices", "null_content": "empty_content",
           "blank_content": "empty_content", "refusal": "refusal"}
WORSE_PROMPT = "You are a quiz assistant."
"""Answers 'The answer is 4.': a healthy server's review rejects it against BRIEF_PROMPT."""
GOOD_PROMPT = BRIEF_PROMPT + " Be kind."
"""Still answers with the fact only: a healthy server's review accepts it."""


def capability_suite() -> list[gr.CanaryCase]:
    return [gr.CanaryCase(id="sum", input="2+2", expect="4"),
            gr.CanaryCase(id="capital", input="capital of France", expect="Paris"),
            gr.CanaryCase(id="sky", input="colour of the sky", expect="blue")]


def brief_client(server: FakeOpenAIServer, sdk: str = "sync", **options: Any) -> OpenAIChatClient:
    """A client on BRIEF_PROMPT; ``sdk="async"`` gives only an AsyncOpenAI (its sync twin
    answers invoke and the canaries)."""
    if sdk == "async":
        return OpenAIChatClient(openai.AsyncOpenAI(api_key="k", base_url=server.base_url,
                                                   max_retries=0),
                                model="quiz-1", system_prompt=BRIEF_PROMPT, **options)
    return OpenAIChatClient(openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0),
                            async_client=openai.AsyncOpenAI(api_key="k", base_url=server.base_url,
                                                            max_retries=0),
                            model="quiz-1", system_prompt=BRIEF_PROMPT, **options)


def prompt_change(guarded: gr.GuardedClient, prompt: str) -> gr.UpdateProposal:
    return gr.UpdateProposal(parent=guarded.version, kind="prompt", patch=[
        {"op": "replace", "path": "/system_prompt", "value": prompt}])


def metric_points(reader: Any, name: str) -> list[Any]:
    return [point for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics for metric in scope.metrics
            if metric.name == name for point in metric.data.data_points]


# -- OpenAI: the real SDK over loopback -------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", UNUSABLE_KINDS)
def test_an_unusable_openai_body_raises_the_typed_error_at_run_time(
        fresh_server: FakeOpenAIServer, kind: str, mode: str) -> None:
    """Each unusable HTTP 200 body makes guarded invoke/ainvoke raise UnusableResponseError with
    its reason (never return ''), counted as an error, on the GenAI span and in the log; the
    next healthy answer is served."""
    tracer_provider, exporter, meter_provider, reader = capture_telemetry()
    guarded = gr.Guard(canaries=capability_suite(), tracer_provider=tracer_provider,
                       meter_provider=meter_provider).wrap(brief_client(fresh_server))
    fresh_server.serve_unusable(kind)
    with capture_logs() as logs, pytest.raises(gr.UnusableResponseError) as caught:
        if mode == "sync":
            guarded.invoke("2+2")
        else:
            asyncio.run(guarded.ainvoke("2+2"))
    assert (caught.value.adapter, caught.value.reason) == ("openai", REASONS[kind])
    assert "help with that" not in str(caught.value)  # a refusal's text is content: not quoted
    outcomes = {p.attributes["guardrails.outcome"]: p.value
                for p in metric_points(reader, "guardrails.invocations")}
    assert outcomes == {"error": 1}
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat quiz-1"]
    assert span.attributes["error.type"] == "UnusableResponseError"
    assert [entry["reason"] for entry in logs if entry["event"] == "guardrails.call_failed"] == [
        REASONS[kind]]
    fresh_server.serve_unusable(None)
    assert guarded.invoke("2+2").output == "4"


@pytest.mark.parametrize("kind", UNUSABLE_KINDS)
def test_the_unwrapped_openai_client_raises_too(fresh_server: FakeOpenAIServer, kind: str) -> None:
    """Without a guard, invoke and ainvoke raise the same typed error."""
    client = brief_client(fresh_server)
    fresh_server.serve_unusable(kind)
    with pytest.raises(gr.UnusableResponseError, match="unusable response"):
        client.invoke(gr.Request(input="2+2"))
    with pytest.raises(gr.UnusableResponseError):
        asyncio.run(client.ainvoke(gr.Request(input="2+2")))


def test_a_tool_call_without_content_is_still_an_answer() -> None:
    """Null content is usable when the message calls tools (content was not asked for)."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with FakeOpenAIServer(lambda r: RawBody({"choices": [{"index": 0, "finish_reason": "tool_calls",
                                                          "message": {"role": "assistant",
                                                                      "content": None,
                                                                      "tool_calls": [call]}}]})
                          ) as server:
        client = brief_client(server)
        assert client.invoke(gr.Request(input="x"))["tool_calls"][0]["name"] == "f"


def test_a_tool_call_without_a_function_is_unusable() -> None:
    """A tool call the SDK parsed without a function name is the wrong schema, not a crash."""
    body = RawBody({"choices": [{"index": 0, "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}}]})
    with FakeOpenAIServer(lambda r: body) as server, \
            pytest.raises(gr.UnusableResponseError, match="tool call 0") as caught:
        brief_client(server).invoke(gr.Request(input="x"))
    assert caught.value.reason == "wrong_schema"


def test_unknown_unusable_kinds_are_refused_with_the_list() -> None:
    """serve_unusable names the kinds it knows when given another."""
    with FakeOpenAIServer() as server, pytest.raises(ValueError, match="no_choices"):
        server.serve_unusable("garbage")
    assert unusable_body("no_choices")["choices"] == []


@pytest.mark.parametrize("sdk", ["sync", "async"])
@pytest.mark.parametrize("kind", UNUSABLE_KINDS)
def test_a_review_during_garbage_accepts_nothing_and_a_healthy_one_decides(
        fresh_server: FakeOpenAIServer, kind: str, sdk: str) -> None:
    """While the server answers garbage, neither a worse nor a good prompt is accepted: the
    review is void on the ``control`` finding and the incumbent keeps serving. Once healthy,
    the worse one is rejected on capability and the same good change is accepted."""
    guarded = gr.Guard(canaries=capability_suite()).wrap(brief_client(fresh_server, sdk))
    incumbent = guarded.version
    fresh_server.serve_unusable(kind)
    for prompt in (WORSE_PROMPT, GOOD_PROMPT):
        decision = guarded.propose(prompt_change(guarded, prompt))
        assert decision.verdict is gr.Verdict.ERROR, decision
        control = next(f for f in decision.findings if f.check == "control")
        assert not control.passed and control.evidence["incumbent_answered"] == 0
        assert guarded.version == incumbent
    with pytest.raises(gr.UnusableResponseError):
        guarded.invoke("2+2")
    fresh_server.serve_unusable(None)
    assert guarded.invoke("2+2").output == "4"
    worse = guarded.propose(prompt_change(guarded, WORSE_PROMPT))
    assert worse.verdict is gr.Verdict.REJECTED
    assert worse.deciding_finding is not None and worse.deciding_finding.check == "capability"
    good = guarded.propose(prompt_change(guarded, GOOD_PROMPT))
    assert good.accepted, good
    assert guarded.state()["system_prompt"] == GOOD_PROMPT
    assert guarded.invoke("2+2").output == "4"


def test_an_optimiser_asking_a_garbage_server_gets_an_error_not_an_empty_prompt(
        fresh_server: FakeOpenAIServer) -> None:
    """complete() raises on an unusable answer, so self_improve is an error decision rather
    than a rewrite to an empty prompt."""
    from guardrails_plugins.adapters._adapting import SelfRewritePrompt

    guarded = gr.Guard(canaries=capability_suite()).wrap(
        brief_client(fresh_server, optimizer=SelfRewritePrompt()))
    guarded.client.record("2+2", "4", passed=False, note="too short")
    fresh_server.serve_unusable("null_content")
    decision = guarded.self_improve()
    assert decision is not None and decision.verdict is gr.Verdict.ERROR
    assert "UnusableResponseError" in str(decision.deciding_finding)
    assert guarded.state()["system_prompt"] == BRIEF_PROMPT


# -- LangChain ------------------------------------------------------------------------------


def agent(model: Any) -> LangChainAgentClient:
    return LangChainAgentClient(model, system_prompt="Answer.")


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("shape", "model", "reason"), [
    ("empty text", lambda: RuleChatModel(rule=lambda s, q: ""), "empty_content"),
    ("blank text", lambda: RuleChatModel(rule=lambda s, q: " \n "), "empty_content"),
    ("refusal field", lambda: GenericFakeChatModel(messages=itertools.repeat(
        AIMessage(content="", additional_kwargs={"refusal": "no"}))), "refusal"),
    ("refusal block", lambda: GenericFakeChatModel(messages=itertools.repeat(
        AIMessage(content=[{"type": "refusal", "refusal": "no"}]))), "refusal"),
])
def test_a_langchain_agent_without_usable_text_raises(shape: str, model: Any, reason: str,
                                                      mode: str) -> None:
    """An agent run ending in empty or blank text or a refusal raises UnusableResponseError
    through the guard, sync and async."""
    guarded = gr.Guard(canaries=capability_suite()).wrap(agent(model()))
    with pytest.raises(gr.UnusableResponseError) as caught:
        if mode == "sync":
            guarded.invoke("2+2")
        else:
            asyncio.run(guarded.ainvoke("2+2"))
    assert caught.value.reason == reason, shape


# -- DSPy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dspy_prediction_with_an_empty_field_raises(mode: str) -> None:
    """An empty answer field is an unusable prediction, naming the field, sync and async."""
    client = dspy_client(lm=dspy_empty_lm())
    with pytest.raises(gr.UnusableResponseError, match="'answer'") as caught:
        if mode == "sync":
            client.invoke(gr.Request(input="2+2"))
        else:
            asyncio.run(client.ainvoke(gr.Request(input="2+2")))
    assert caught.value.reason == "empty_field"


def test_a_dspy_prediction_missing_the_output_field_raises() -> None:
    """An output_field the prediction lacks is named, with the fields it has."""
    with pytest.raises(gr.UnusableResponseError, match="no field 'rationale'") as caught:
        dspy_client(output_field="rationale").invoke(gr.Request(input="2+2"))
    assert caught.value.reason == "missing_field"


def test_a_dspy_program_returning_nothing_raises() -> None:
    """A module whose forward returns None gives no prediction: no_answer."""
    class Silent(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.predict = dspy.Predict("question -> answer")

        def forward(self, question: str) -> None:
            return None

    from guardrails_plugins.adapters.dspy import DSPyProgramClient

    client = DSPyProgramClient(Silent(), lm=dspy_empty_lm())
    with pytest.raises(gr.UnusableResponseError) as caught:
        client.invoke(gr.Request(input={"question": "2+2"}))
    assert caught.value.reason == "no_answer"


# -- scikit-learn and river -------------------------------------------------------------------


def test_a_sklearn_nan_prediction_raises() -> None:
    """A regressor whose weights went NaN predicts NaN: unusable, at run time and through the
    guard asynchronously."""
    X, y = blobs_data()
    model = SGDRegressor(random_state=0).partial_fit(X[:50], y[:50].astype(float))
    client = SklearnOnlineClient(model, blobs=gr.MemoryBlobStore())
    client.estimator.coef_[0] = np.nan
    with pytest.raises(gr.UnusableResponseError, match="not a finite number") as caught:
        client.invoke(gr.Request(input=X[0].tolist()))
    assert caught.value.reason == "nan"


class TwoRows(SGDClassifier):
    """An estimator whose predict answers two rows for one sample (a broken wrapper)."""

    def predict(self, X: Any) -> Any:
        return np.concatenate([super().predict(X)] * 2)


def test_a_sklearn_prediction_of_the_wrong_shape_raises() -> None:
    """predict() returning two rows for one sample is wrong_shape, naming the shape."""
    X, y = blobs_data()
    blobs = gr.MemoryBlobStore()
    client = SklearnOnlineClient(TwoRows(random_state=0).partial_fit(X[:50], y[:50], classes=[0, 1]),
                                 blobs=blobs)
    with pytest.raises(gr.UnusableResponseError, match=r"shape \(2,\)") as caught:
        client.invoke(gr.Request(input=X[0].tolist()))
    assert caught.value.reason == "wrong_shape"


@pytest.mark.parametrize(("respond", "reason"), [
    (lambda m, x: {"label": 1, "score": float("inf")}, "nan"),
    (lambda m, x: np.zeros(3), "wrong_type"),
    (lambda m, x: object(), "wrong_type"),
    (lambda m, x: None, "no_answer"),
])
def test_a_sklearn_respond_giving_no_json_answer_raises(respond: Any, reason: str) -> None:
    """Whatever respond returns is checked: None, NaN or infinity anywhere, or a non-JSON value."""
    client = sklearn_client(gr.MemoryBlobStore(), respond=respond)
    with pytest.raises(gr.UnusableResponseError) as caught:
        client.invoke(gr.Request(input=blobs_data()[0][0].tolist()))
    assert caught.value.reason == reason


def test_usable_sklearn_answers_are_plain_json() -> None:
    """A usable answer passes unchanged in value (numpy scalars become Python numbers)."""
    client = sklearn_client(gr.MemoryBlobStore(),
                            respond=lambda m, x: {"label": np.int64(1), "p": [np.float64(0.5)]})
    assert client.invoke(gr.Request(input=blobs_data()[0][0].tolist())) == {"label": 1, "p": [0.5]}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("respond", "reason"), [
    (lambda m, x: float("nan"), "nan"),
    (lambda m, x: None, "no_answer"),
    (lambda m, x: {True: float("nan")}, "nan"),
])
def test_a_river_prediction_that_is_nan_or_none_raises(respond: Any, reason: str,
                                                       mode: str) -> None:
    """river answers of None (nothing learned yet), NaN (also inside predict_proba_one's dict)
    raise through the guard, sync and async."""
    guarded = gr.Guard(canaries=capability_suite()).wrap(
        river_client(gr.MemoryBlobStore(), respond=respond))
    with pytest.raises(gr.UnusableResponseError) as caught:
        if mode == "sync":
            guarded.invoke({"a": 0.1, "b": 0.2})
        else:
            asyncio.run(guarded.ainvoke({"a": 0.1, "b": 0.2}))
    assert caught.value.reason == reason
