"""Stream-only clients (no ``invoke``): guarded, invoked and reviewed through their stream consumed whole."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest

import guardrails as gr
from guardrails.conformance import AdapterCase, run_conformance
from guardrails.testing import StreamOnlyClient

CASES = [gr.CanaryCase(id="a", input="a", expect="AA"), gr.CanaryCase(id="b", input="b", expect="BB")]
INCUMBENT = {"answers": {"a": "AA", "b": "wrong"}}
RUN = gr.RunSettings(smoke_cases=0, retries=0)


def state_chunks(state: dict[str, Any], request: gr.Request) -> list[Any]:
    """The answer of ``state`` for the request, in one-character chunks; ``mode`` breaks it."""
    mode = state.get("mode")
    if mode == "unusable":
        raise gr.UnusableResponseError("the stream ended without [DONE]", adapter="fake",
                                       reason="no_answer")
    if mode == "wrong_item":
        return ["A", 42]
    if mode == "empty":
        return []
    answer = state.get("answers", {}).get(str(request.input), "?")
    return list(answer)


def policy(name: str, **settings: Any) -> Any:
    (middleware,) = gr.load_plugin(name).build(settings).middleware
    return middleware


def guarded(state: dict[str, Any] | None = None, **kwargs: Any) -> gr.GuardedClient:
    guard = gr.Guard(canaries=CASES, canary_run=RUN, **kwargs)
    return guard.wrap(StreamOnlyClient(state_chunks, dict(INCUMBENT if state is None else state)))


def patch(client: gr.GuardedClient, *ops: dict[str, Any]) -> gr.UpdateProposal:
    return gr.UpdateProposal(parent=client.version, patch=list(ops))


BETTER = {"op": "replace", "path": "/answers/b", "value": "BB"}
WORSE = {"op": "replace", "path": "/answers/a", "value": "no"}


# -- wrapping and invoke -----------------------------------------------------------------------


def test_a_stream_only_client_is_a_typed_stream_client_and_wraps() -> None:
    """StreamOnlyClient has no invoke, satisfies SelfUpdatingStreamClient, and Guard.wrap takes it."""
    client = StreamOnlyClient(["x"])
    assert not hasattr(client, "invoke")
    assert isinstance(client, gr.SelfUpdatingStreamClient)
    assert isinstance(client, gr.AsyncSelfUpdatingStreamClient)
    assert gr.Guard(canaries=CASES).wrap(client).client is client


def test_a_client_with_neither_invoke_nor_a_stream_is_refused_naming_both() -> None:
    """Without invoke, stream and astream there is no way to answer: ConfigError says so."""
    class Mute:
        def snapshot(self) -> dict[str, Any]:
            return {}

        def propose_update(self) -> None:
            return None

        def with_state(self, state: dict[str, Any]) -> Mute:
            return Mute()

    with pytest.raises(gr.ConfigError, match=r"invoke \(or stream/astream\)"):
        gr.Guard(canaries=CASES).wrap(Mute())


def test_invoke_answers_the_stream_joined_and_discloses_the_version() -> None:
    """guarded.invoke of a stream-only client is the text of its stream, with the disclosure."""
    client = guarded()
    response = client.invoke("a")
    assert response.output == "AA"
    assert response.metadata["guardrails.served_version"] == client.version


def test_ainvoke_answers_the_async_stream_joined() -> None:
    """guarded.ainvoke consumes astream whole."""
    client = guarded()
    assert asyncio.run(client.ainvoke("a")).output == "AA"
    assert client.client.opened == 1


def test_invoke_applies_the_output_policies_to_the_joined_stream() -> None:
    """A value split across chunks is redacted (or blocked) on invoke as on the joined text."""
    redact = guarded({"answers": {"a": "key sk-abcd end"}}, middleware=[policy(
        "regex", rules=[{"name": "key", "pattern": "sk-[a-z]{4}", "action": "redact",
                         "replacement": "[KEY]"}])])
    response = redact.invoke("a")
    assert response.output == "key [KEY] end"
    assert response.metadata["guardrails.redactions"] == {"regex": {"output": {"key": 1}}}
    block = guarded({"answers": {"a": "key sk-abcd end"}}, middleware=[policy(
        "regex", rules=[{"name": "key", "pattern": "sk-[a-z]{4}", "action": "block"}])])
    with pytest.raises(gr.GuardrailViolation):
        block.invoke("a")


def test_tool_calls_are_joined_per_index_and_reasoning_is_not_part_of_the_answer() -> None:
    """Tool-call deltas join into the OpenAI adapter's shape; reasoning is left out of invoke."""
    chunks = [gr.StreamChunk(reasoning="think", text="Calling "),
              gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=0, id="c0", name="f",
                                                          arguments='{"x"'),)),
              gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=1, id="c1", name="g"),
                                         gr.ToolCallDelta(index=0, arguments=": 1}")))]
    output = gr.Guard(canaries=CASES).wrap(StreamOnlyClient(chunks)).invoke("a").output
    assert output == {"content": "Calling ", "tool_calls": [
        {"id": "c0", "name": "f", "arguments": '{"x": 1}'},
        {"id": "c1", "name": "g", "arguments": ""}]}


@pytest.mark.parametrize("mode", ["empty", "wrong_item", "unusable"])
def test_an_unusable_stream_raises_unusable_response_from_invoke(mode: str) -> None:
    """An empty stream, an item that is no chunk, or the adapter's own error: the typed error."""
    client = guarded({"mode": mode})
    with pytest.raises(gr.UnusableResponseError):
        client.invoke("a")
    with pytest.raises(gr.UnusableResponseError):
        asyncio.run(client.ainvoke("a"))


def test_a_tool_call_without_a_name_is_unusable() -> None:
    """Arguments with no function name cannot be executed: UnusableResponseError."""
    client = StreamOnlyClient([gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=0,
                                                                            arguments="{}"),))])
    with pytest.raises(gr.UnusableResponseError, match="without a name"):
        gr.Guard(canaries=CASES).wrap(client).invoke("a")


def test_invoke_closes_the_stream_it_consumed() -> None:
    """The stream is closed when invoke stops reading it early (here: an error mid-stream)."""
    inner = StreamOnlyClient(["a", "b", "c"], fail_after=2)
    with pytest.raises(RuntimeError):
        gr.Guard(canaries=CASES).wrap(inner).invoke("x")
    assert inner.yielded == 2


# -- reviews -------------------------------------------------------------------------------------


def test_a_better_stream_only_candidate_is_accepted_and_served() -> None:
    """The canaries consume both sides' streams: the candidate answering b right is accepted."""
    client = guarded()
    decision = client.propose(patch(client, BETTER))
    assert decision.accepted, decision.reasons
    assert client.invoke("b").output == "BB"


def test_a_worse_stream_only_candidate_is_rejected() -> None:
    """A candidate that breaks case a (which the incumbent passes) is rejected."""
    client = guarded()
    before = client.version
    decision = client.propose(patch(client, WORSE))
    assert decision.verdict is gr.Verdict.REJECTED
    assert client.version == before


@pytest.mark.parametrize("mode", ["empty", "wrong_item", "unusable"])
def test_a_candidate_whose_stream_is_broken_is_never_accepted(mode: str) -> None:
    """A broken stream counts as an error for its side, never as an answer."""
    client = guarded()
    before = client.version
    decision = client.propose(patch(client, BETTER, {"op": "add", "path": "/mode", "value": mode}))
    assert not decision.accepted
    assert client.version == before


class AsyncOnly:
    """A stream-only client with only ``astream``: answers ``state["answer"]`` in two chunks."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    async def astream(self, request: gr.Request) -> AsyncIterator[str]:
        answer = self.state["answers"].get(str(request.input), "?")
        yield answer[:1]
        await asyncio.sleep(0)
        yield answer[1:]

    def snapshot(self) -> dict[str, Any]:
        return dict(self.state)

    def propose_update(self) -> None:
        return None

    def with_state(self, state: dict[str, Any]) -> AsyncOnly:
        return AsyncOnly(state)


def test_an_async_only_stream_client_is_invoked_and_reviewed() -> None:
    """A client with only astream answers sync invoke (on a loop of its own) and canaries."""
    client = gr.Guard(canaries=CASES, canary_run=RUN).wrap(AsyncOnly(INCUMBENT))
    assert client.invoke("a").output == "AA"
    assert asyncio.run(client.ainvoke("a")).output == "AA"
    assert client.propose(patch(client, BETTER)).accepted
    assert client.invoke("b").output == "BB"


class Endless:
    """A stream-only client whose stream never ends (a hostile or stuck candidate)."""

    closed: ClassVar[list[bool]] = []

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    def stream(self, request: gr.Request) -> Iterator[str]:
        if not self.state.get("endless"):
            yield from self.state["answers"].get(str(request.input), "?")
            return
        try:
            for _ in itertools.count():
                yield "x"
        finally:
            Endless.closed.append(True)

    def snapshot(self) -> dict[str, Any]:
        return dict(self.state)

    def propose_update(self) -> None:
        return None

    def with_state(self, state: dict[str, Any]) -> Endless:
        return Endless(state)


def test_an_endless_candidate_stream_times_out_is_closed_and_is_not_accepted() -> None:
    """The case timeout covers the whole stream; the consumer closes it at the deadline."""
    Endless.closed.clear()
    client = gr.Guard(canaries=CASES, canary_run=RUN, case_timeout=0.3).wrap(Endless(INCUMBENT))
    decision = client.propose(patch(client, BETTER, {"op": "add", "path": "/endless",
                                                     "value": True}))
    assert not decision.accepted
    assert Endless.closed  # closed by the consumer, not left reading


class Flood(Endless):
    """An endless stream of large chunks: it would fill memory long before a deadline."""

    def stream(self, request: gr.Request) -> Iterator[str]:
        if not self.state.get("endless"):
            yield from super().stream(request)
            return
        try:
            while True:
                yield "x" * 65536
        finally:
            Endless.closed.append(True)

    def with_state(self, state: dict[str, Any]) -> Flood:
        return Flood(state)


def test_a_flooding_candidate_stream_is_cut_at_the_size_cap_closed_and_not_accepted() -> None:
    """With no deadline near, a stream carrying more than WHOLE_MAX_CHARS is closed there and
    counts as an unusable answer; the candidate is not accepted."""
    Endless.closed.clear()
    client = gr.Guard(canaries=CASES, canary_run=RUN, case_timeout=60).wrap(Flood(INCUMBENT))
    decision = client.propose(patch(client, BETTER, {"op": "add", "path": "/endless",
                                                     "value": True}))
    assert not decision.accepted and Endless.closed
    flooding = Flood({**INCUMBENT, "endless": True})
    with pytest.raises(gr.UnusableResponseError, match="more than 16,777,216 characters") as cut:
        gr.Guard(canaries=CASES).wrap(flooding).invoke("a")
    assert cut.value.reason == "too_large"


# -- the process sandbox -------------------------------------------------------------------------


def sandboxed() -> gr.GuardedClient:
    limits = gr.SandboxLimits(wall_time=5, cpu_time=5, memory=400 * 1024 * 1024, startup=30)
    return guarded(sandbox="process", sandbox_limits=limits)


def test_the_process_sandbox_reviews_a_stream_only_candidate() -> None:
    """In the sandbox child the candidate's stream is consumed whole: a better one is accepted."""
    client = sandboxed()
    decision = client.propose(patch(client, BETTER))
    assert decision.accepted, decision.reasons
    assert client.invoke("b").output == "BB"


def test_the_process_sandbox_never_accepts_a_broken_stream() -> None:
    """An unusable stream inside the sandbox is an error for the candidate."""
    client = sandboxed()
    decision = client.propose(patch(client, BETTER, {"op": "add", "path": "/mode",
                                                     "value": "unusable"}))
    assert not decision.accepted


# -- the conformance kit -------------------------------------------------------------------------


def test_the_conformance_suite_holds_a_stream_only_adapter() -> None:
    """run_conformance passes for StreamOnlyClient: its invoke-based checks use the stream."""
    def make() -> StreamOnlyClient:
        client = StreamOnlyClient(state_chunks, {"answers": {"a": "AA"}})
        client.queue({"op": "replace", "path": "/answers/a", "value": "AB"})
        return client

    case = AdapterCase(name="stream-only", make_client=make, requests=["a"],
                       unusable={"no answer": lambda: StreamOnlyClient(state_chunks,
                                                                       {"mode": "unusable"})},
                       broken_streams={"cut off": lambda: StreamOnlyClient(
                           state_chunks, {"mode": "unusable", "cut": True})})
    assert run_conformance(case) == []
