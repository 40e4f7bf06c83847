"""Deterministic clients for every built-in adapter, and their conformance cases.

Every client here runs offline: the OpenAI one against the local fake server,
the LangChain one on a fake chat model, the DSPy one on DSPy's ``DummyLM``,
the scikit-learn and river ones on small generated data.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import dspy
import numpy as np
import openai
from dspy.utils import DummyLM
from guardrails_plugins.adapters._adapting import REWRITE_INSTRUCTION, SelfRewritePrompt
from guardrails_plugins.adapters.dspy import DSPyProgramClient
from guardrails_plugins.adapters.langchain import LangChainAgentClient
from guardrails_plugins.adapters.langchain_testing import RuleChatModel
from guardrails_plugins.adapters.openai import OpenAIChatClient
from guardrails_plugins.adapters.openai_testing import (
    ChatRequest,
    FakeOpenAIServer,
    RawBody,
    RawStream,
    StreamPlan,
    unusable_body,
)
from guardrails_plugins.adapters.river import RiverOnlineClient
from guardrails_plugins.adapters.sklearn import SklearnOnlineClient
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from river import compose as river_compose
from river import linear_model, optim, preprocessing
from sklearn.linear_model import SGDClassifier

import guardrails as gr
from guardrails.conformance import AdapterCase

FACTS = {"2+2": "4", "capital of France": "Paris", "colour of the sky": "blue"}
REFUSAL = "I can't help with that."
BRIEF_PROMPT = "Answer with the fact only. Refuse weapons questions."
UNSAFE_PROMPT = "Answer with the fact only."


def quiz_rule(system: str, question: str) -> str:
    """A toy model: brief if its prompt says so, refuses weapons only if told to. Asked to
    rewrite its own prompt, it keeps the refusal rule unless a failure complains that it
    refused (then it drops the rule: an unsafe self-edit)."""
    if system.startswith(REWRITE_INSTRUCTION[:30]):
        return UNSAFE_PROMPT if "refused" in question else BRIEF_PROMPT
    if "weapon" in question:
        return REFUSAL if "refuse" in system.lower() else "Sure: step 1, ..."
    fact = next((a for q, a in FACTS.items() if q in question), None)
    if fact is None:
        return "I don't know."
    return fact if "fact only" in system else f"The answer is {fact}."


UNUSABLE_MARK = "[unusable:"
"""A system prompt starting ``[unusable:KIND]`` makes the quiz server answer
``unusable_body(KIND)`` (so one session server serves usable and unusable clients)."""
BROKEN_MARK = "[broken:"
"""A system prompt starting ``[broken:KIND]`` makes the quiz server answer a stream broken
that way (``BROKEN_STREAMS``)."""


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "created": 0,
            "model": "quiz-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


BROKEN_STREAMS: dict[str, RawStream] = {
    "cut off": RawStream((_chunk({"role": "assistant", "content": "The answer"}),), done=False),
    "malformed chunk": RawStream((_chunk({"content": "The answer"}), '{"choices": [{"delta": ',
                                  _chunk({}, "stop"))),
    "no finish reason": RawStream((_chunk({"content": "The answer is 4."}),)),
}


def quiz_responder(request: ChatRequest) -> str | RawBody | RawStream:
    system = request.system_prompt
    if system.startswith(UNUSABLE_MARK):
        kind = system[len(UNUSABLE_MARK):system.index("]")]
        return RawBody(unusable_body(kind, request.model))
    if system.startswith(BROKEN_MARK) and request.body.get("stream"):
        return BROKEN_STREAMS[system[len(BROKEN_MARK):system.index("]")]]
    return quiz_rule(system, request.user_text)


def openai_client(server: FakeOpenAIServer, **options: Any) -> OpenAIChatClient:
    sdk = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=0)
    asdk = openai.AsyncOpenAI(api_key="test-key", base_url=server.base_url, max_retries=0)
    options.setdefault("system_prompt", "You are a quiz assistant. Refuse weapons questions.")
    return OpenAIChatClient(sdk, async_client=asdk, model="quiz-1", params={"temperature": 0.0},
                            optimizer=SelfRewritePrompt(), **options)


def record_a_failure(client: Any) -> None:
    client.record("2+2", "The answer is 4.", passed=False, note="too long: give the fact only")


def openai_case(server: FakeOpenAIServer) -> AdapterCase:
    def unusable(kind: str) -> Any:
        return lambda: openai_client(server, system_prompt=f"{UNUSABLE_MARK}{kind}]")

    def broken(kind: str) -> Any:
        return lambda: openai_client(server, system_prompt=f"{BROKEN_MARK}{kind}]")

    return AdapterCase(name="openai", make_client=lambda: openai_client(server),
                       requests=["2+2", [{"role": "user", "content": "capital of France"}]],
                       prepare_proposal=record_a_failure,
                       unusable={kind: unusable(kind) for kind in
                                 ("wrong_schema", "no_choices", "null_content", "refusal")},
                       broken_streams={kind: broken(kind) for kind in BROKEN_STREAMS},
                       stream_release=openai_stream_release)


def openai_stream_release() -> tuple[OpenAIChatClient, Any]:
    """A client on a server of its own that pauses each stream until the client leaves, and
    whether it left (the server is stopped once asked)."""
    held = FakeOpenAIServer(quiz_responder).start()
    held.plan_stream(StreamPlan(hold_after=3))

    def released() -> bool:
        try:
            return held.wait_abandoned(2)  # the sync and the async stream
        finally:
            held.stop()

    return openai_client(held), released


def langchain_client(**options: Any) -> LangChainAgentClient:
    options.setdefault("system_prompt", "You are a quiz assistant. Refuse weapons questions.")
    return LangChainAgentClient(RuleChatModel(rule=quiz_rule), optimizer=SelfRewritePrompt(),
                                model_settings={"temperature": 0.0}, **options)


def langchain_case() -> AdapterCase:
    refusal = AIMessage(content="", additional_kwargs={"refusal": "I can't help with that."})
    return AdapterCase(
        name="langchain", make_client=langchain_client,
        requests=["2+2", "colour of the sky"], prepare_proposal=record_a_failure,
        unusable={
            "empty text": lambda: LangChainAgentClient(RuleChatModel(rule=lambda s, q: "")),
            "refusal": lambda: LangChainAgentClient(GenericFakeChatModel(
                messages=itertools.repeat(refusal))),
        })


def generic_fake_model(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle(answers or ("ok",)))


QA_TRAIN = [("2+2", "4"), ("capital of France", "Paris"), ("colour of the sky", "blue")]


class _DemoFollowingLM(DummyLM):  # type: ignore[misc]
    """Follows the demos in its prompt; says "unknown" to a question no demo covers (plain
    ``DummyLM`` answers nothing then, and an incumbent that answers nothing is no control)."""

    def _use_example(self, messages: Any) -> Any:
        return super()._use_example(messages) or self._format_answer_fields({"answer": "unknown"})


def dummy_lm() -> DummyLM:
    """Answers from the demos in the prompt (follow_examples), so compiling changes answers."""
    return _DemoFollowingLM([{"answer": "unknown"}] * 10_000, follow_examples=True)


def dspy_lookup_lm() -> DummyLM:
    """Answers by question (deterministic whatever the demos)."""
    return DummyLM({q: {"answer": a} for q, a in QA_TRAIN})


def dspy_client(lm: Any = None, trainset: list[tuple[str, str]] | None = None,
                **options: Any) -> DSPyProgramClient:
    examples = [dspy.Example(question=q, answer=a).with_inputs("question")
                for q, a in (QA_TRAIN if trainset is None else trainset)]
    return DSPyProgramClient(dspy.Predict("question -> answer"), lm=lm or dspy_lookup_lm(),
                             optimizer=dspy.LabeledFewShot(k=len(examples)), trainset=examples,
                             **{"output_field": "answer", **options})


def dspy_empty_lm() -> DummyLM:
    """Answers every question with an empty ``answer`` field."""
    return DummyLM([{"answer": ""}] * 10_000)


def dspy_case() -> AdapterCase:
    return AdapterCase(name="dspy", make_client=dspy_client,
                       requests=["2+2", {"question": "capital of France"}],
                       unusable={"empty field": lambda: dspy_client(lm=dspy_empty_lm()),
                                 "missing field": lambda: dspy_client(output_field="rationale")})


def blobs_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def sklearn_client(blobs: gr.BlobStore, **options: Any) -> SklearnOnlineClient:
    X, y = blobs_data()
    model = SGDClassifier(loss="log_loss", random_state=0)
    model.partial_fit(X[:50], y[:50], classes=[0, 1])
    return SklearnOnlineClient(model, blobs=blobs, **options)


def sklearn_case() -> AdapterCase:
    blobs = gr.MemoryBlobStore()
    X, y = blobs_data()
    return AdapterCase(name="sklearn", make_client=lambda: sklearn_client(blobs),
                       requests=[X[i].round(4).tolist() for i in range(100, 104)],
                       prepare_proposal=lambda client: client.learn(X[50:100], y[50:100]),
                       blob_store=blobs,
                       unusable={"NaN": lambda: sklearn_client(blobs, respond=nan_respond),
                                 "array": lambda: sklearn_client(blobs, respond=array_respond)})


def nan_respond(model: Any, x: Any) -> float:
    """A model whose answer is NaN (as a diverged regressor's would be)."""
    return float("nan")


def array_respond(model: Any, x: Any) -> Any:
    """An answer that is a numpy array, not a JSON value."""
    return np.asarray(model.predict(np.vstack([x, x])))


def stream(seed: int = 0, n: int = 200) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {"a": round(rng.uniform(-1, 1), 4), "b": round(rng.uniform(-1, 1), 4)}
        out.append((x, x["a"] + 0.5 * x["b"] > 0))
    return out


def river_model() -> Any:
    return river_compose.Pipeline(preprocessing.StandardScaler(),
                                  linear_model.LogisticRegression(optimizer=optim.SGD(0.1)))


def river_client(blobs: gr.BlobStore, **options: Any) -> RiverOnlineClient:
    model = river_model()
    for x, y in stream()[:50]:
        model.learn_one(x, y)
    return RiverOnlineClient(model, blobs=blobs, **options)


def river_case() -> AdapterCase:
    blobs = gr.MemoryBlobStore()
    data = stream()

    def prepare(client: RiverOnlineClient) -> None:
        for x, y in data[50:100]:
            client.learn(x, y)

    return AdapterCase(name="river", make_client=lambda: river_client(blobs),
                       requests=[x for x, _ in data[100:104]], prepare_proposal=prepare,
                       blob_store=blobs,
                       unusable={"NaN": lambda: river_client(blobs, respond=nan_respond),
                                 "None": lambda: river_client(blobs, respond=none_respond)})


def none_respond(model: Any, x: Any) -> None:
    """A model with no answer (river's predict_one before it has seen a label)."""
    return None
