"""Streaming through LangChain: ``LangChainAgentClient.stream``/``astream`` and the guarantee
that ``GuardrailsMiddleware`` keeps a model's raw tokens out of LangGraph's ``messages`` stream
(LangChain issue #35011: streaming bypasses the output check).

Real ``create_agent`` agents on LangChain's own fake chat models (``GenericFakeChatModel``, and
``ScriptedChatModel``, its subclass that streams tool calls and reasoning too).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from adapter_cases import langchain_client
from guardrails_plugins.adapters.langchain import GuardrailsMiddleware, LangChainAgentClient
from guardrails_plugins.adapters.langchain_testing import RuleChatModel, ScriptedChatModel
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

import guardrails as gr

FORBIDDEN = "forbidden"


def collect(client: Any, mode: str, text: str = "2+2") -> list[gr.StreamChunk]:
    request = gr.Request(input=text)
    if mode == "sync":
        return list(client.stream(request))

    async def gather() -> list[gr.StreamChunk]:
        return [item async for item in client.astream(request)]

    return asyncio.run(gather())


def joined(chunks: list[gr.StreamChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


class Lookups:
    """A tool that records every call it gets."""

    def __init__(self) -> None:
        self.calls: list[str] = []

        @tool
        def lookup(city: str) -> str:
            """Look up the weather of a city."""
            self.calls.append(city)
            return f"{city}: sunny"

        self.tool = lookup


def tool_script() -> list[AIMessage]:
    return [AIMessage(content="Let me look.",
                      tool_calls=[{"name": "lookup", "args": {"city": "Köln"}, "id": "c1"}]),
            AIMessage(content="It is sunny in Köln.",
                      additional_kwargs={"reasoning": "the tool said sunny"})]


def tool_client(lookups: Lookups, **options: Any) -> LangChainAgentClient:
    return LangChainAgentClient(ScriptedChatModel(messages=iter(tool_script())),
                                tools=[lookups.tool], **options)


# -- LangChainAgentClient.stream --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_agent_streams_its_answer_in_pieces_that_join_to_invoke(mode: str) -> None:
    """A tool-less agent: the text arrives in several chunks and joins to what invoke answers;
    the last chunk carries the usage and the finish reason."""
    client = langchain_client()
    chunks = collect(client, mode)
    assert all(isinstance(c, gr.StreamChunk) for c in chunks)
    assert joined(chunks) == client.invoke(gr.Request(input="2+2")) == "The answer is 4."
    assert len(chunks) > 3
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert chunks[-1].usage["output_tokens"] == 4


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_model_turn_streams_in_order_with_tool_calls_numbered(mode: str) -> None:
    """A run with a tool call: the first turn's text and its call's arguments (which join to the
    JSON the model sent, unescaped), then the final turn's reasoning and text; the tool's own
    result is not released."""
    lookups = Lookups()
    chunks = collect(tool_client(lookups), mode)
    assert joined(chunks) == "Let me look.It is sunny in Köln."
    calls = [call for c in chunks for call in c.tool_calls]
    assert {call.index for call in calls} == {0}
    assert (calls[0].id, calls[0].name) == ("c1", "lookup")
    assert json.loads("".join(call.arguments for call in calls)) == {"city": "Köln"}
    assert "".join(c.reasoning for c in chunks) == "the tool said sunny"
    assert "Köln: sunny" not in joined(chunks) and lookups.calls == ["Köln"]


def test_tool_calls_of_later_turns_get_new_indices() -> None:
    """Two turns that each call a tool: their deltas never share an index, so the calls are
    told apart."""
    lookups = Lookups()
    script = [AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"city": c},
                                                 "id": f"c{i}"}])
              for i, c in enumerate(("Köln", "Bonn"))] + [AIMessage(content="Both sunny.")]
    client = LangChainAgentClient(ScriptedChatModel(messages=iter(script)), tools=[lookups.tool])
    chunks = collect(client, "sync")
    firsts = {call.index: call.id for c in chunks for call in c.tool_calls if call.id}
    assert firsts == {0: "c0", 1: "c1"} and lookups.calls == ["Köln", "Bonn"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_closing_the_stream_early_stops_the_run(mode: str) -> None:
    """The consumer stops after the first chunk: the agent's stream is closed, so the tool the
    model was about to call never runs."""
    lookups = Lookups()
    client = tool_client(lookups)
    if mode == "sync":
        stream = client.stream(gr.Request(input="weather?"))
        assert next(stream).text
        stream.close()
    else:
        async def first_then_close() -> None:
            stream = client.astream(gr.Request(input="weather?"))
            assert (await stream.__anext__()).text
            await stream.aclose()

        asyncio.run(first_then_close())
    assert lookups.calls == []
    assert joined(collect(client.with_state(client.snapshot()), "sync")).endswith("Köln.")


REFUSAL = AIMessage(content="", additional_kwargs={"refusal": "I can't help with that."})
UNUSABLE = {
    "refusal": (lambda: ScriptedChatModel(messages=itertools.repeat(REFUSAL)), "refusal"),
    "blank text": (lambda: RuleChatModel(rule=lambda s, q: "   "), "empty_content"),
    "generic refusal": (lambda: GenericFakeChatModel(messages=itertools.repeat(REFUSAL)),
                        "refusal"),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("shape", sorted(UNUSABLE))
def test_an_unusable_run_raises_the_typed_error(shape: str, mode: str) -> None:
    """A refusal or a blank last turn ends the stream in UnusableResponseError, as invoke
    does, never in an empty answer with a finish reason."""
    make, reason = UNUSABLE[shape]
    client = LangChainAgentClient(make())
    with pytest.raises(gr.UnusableResponseError) as error:
        collect(client, mode)
    assert error.value.reason == reason and error.value.adapter == "langchain"


def test_a_run_that_ends_on_a_tool_step_is_unusable() -> None:
    """A run whose last step is not the model's (a return_direct tool) has no answer to stream,
    as for invoke."""
    @tool(return_direct=True)
    def finish(city: str) -> str:
        """Answer directly."""
        return "done"

    script = [AIMessage(content="", tool_calls=[{"name": "finish", "args": {"city": "x"},
                                                 "id": "f"}])]
    client = LangChainAgentClient(ScriptedChatModel(messages=iter(script)), tools=[finish])
    with pytest.raises(gr.UnusableResponseError) as error:
        collect(client, "sync")
    assert error.value.reason == "wrong_type"


# -- GuardrailsMiddleware: no token reaches a streaming caller unchecked -----------------------


def deny(action: str) -> GuardrailsMiddleware:
    return GuardrailsMiddleware(gr.load_plugin("deny_list").build(
        {"words": [FORBIDDEN], "action": action}).middleware)


def streamed(agent: Any, mode: str) -> list[Any]:
    """Every message the agent's ``messages`` stream gives a caller (sync or async)."""
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    if mode == "sync":
        return [message for message, _ in agent.stream(payload, stream_mode="messages")]

    async def gather(stream: AsyncIterator[Any]) -> list[Any]:
        return [message async for message, _ in stream]

    return asyncio.run(gather(agent.astream(payload, stream_mode="messages")))


def texts(messages: list[Any]) -> str:
    return "|".join(str(m.text) for m in messages)


def test_without_the_middleware_langgraph_streams_raw_tokens() -> None:
    """The hazard, shown on LangChain itself: a streaming caller gets the model's tokens while
    it runs, the forbidden one among them, before any after-model check."""
    model = GenericFakeChatModel(messages=itertools.cycle([f"this is {FORBIDDEN} text"]))
    agent = create_agent(model=model, tools=[])
    assert FORBIDDEN in texts(streamed(agent, "sync")).split("|")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_streaming_caller_gets_the_redacted_message_never_the_tokens(mode: str) -> None:
    """With the middleware, the messages stream carries the model's answer once, after the
    redaction: the forbidden word never appears, in any piece."""
    model = GenericFakeChatModel(messages=itertools.cycle([f"this is {FORBIDDEN} text"]))
    agent = create_agent(model=model, tools=[], middleware=[deny("redact")])
    messages = streamed(agent, mode)
    assert FORBIDDEN not in texts(messages)
    assert [str(m.text) for m in messages] == ["this is [REDACTED] text"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_blocked_answer_streams_nothing_of_it(mode: str) -> None:
    """A block ends the caller's stream with GuardrailViolation, and no piece of the blocked
    answer was streamed before it."""
    model = GenericFakeChatModel(messages=itertools.cycle([f"this is {FORBIDDEN} text"]))
    agent = create_agent(model=model, tools=[], middleware=[deny("block")])
    seen: list[Any] = []
    payload = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(gr.GuardrailViolation):
        if mode == "sync":
            for message, _ in agent.stream(payload, stream_mode="messages"):
                seen.append(message)
        else:
            async def gather() -> None:
                async for message, _ in agent.astream(payload, stream_mode="messages"):
                    seen.append(message)

            asyncio.run(gather())
    assert not any(isinstance(m, AIMessage) for m in seen)


class SwapModel(AgentMiddleware):
    """A middleware inside ours that swaps in another (untagged) model."""

    def __init__(self, answer: str) -> None:
        super().__init__()
        self.answer = answer

    def _model(self) -> GenericFakeChatModel:
        return GenericFakeChatModel(messages=itertools.cycle([self.answer]))

    def wrap_model_call(self, request: Any, handler: Any) -> Any:
        return handler(request.override(model=self._model()))

    async def awrap_model_call(self, request: Any, handler: Any) -> Any:
        return await handler(request.override(model=self._model()))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_model_swapped_in_by_an_inner_middleware_is_held_back_too(mode: str) -> None:
    """The hold covers every model run inside the middleware, not only the agent's model."""
    agent = create_agent(model=GenericFakeChatModel(messages=itertools.cycle(["unused"])),
                         tools=[], middleware=[deny("redact"), SwapModel(f"a {FORBIDDEN} one")])
    messages = streamed(agent, mode)
    assert [str(m.text) for m in messages] == ["a [REDACTED] one"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_agent_client_with_the_middleware_streams_checked_turns_whole(mode: str) -> None:
    """Through LangChainAgentClient.stream with the middleware, each model turn arrives whole
    and redacted, tool-call arguments included."""
    lookups = Lookups()
    redact = GuardrailsMiddleware(gr.load_plugin("deny_list").build(
        {"words": ["sunny", "Köln"], "action": "redact"}).middleware)
    chunks = collect(tool_client(lookups, middleware=[redact]), mode)
    assert [c.text for c in chunks if c.text] == ["Let me look.",
                                                 "It is [REDACTED] in [REDACTED]."]
    assert all("Köln" not in call.arguments for c in chunks for call in c.tool_calls)
    assert chunks[-1].finish_reason == "stop"


def _iter_types(stream: Iterator[Any]) -> set[str]:
    return {type(item).__name__ for item in stream}


def test_the_stream_is_a_generator_the_guard_can_close() -> None:
    """stream() returns a generator (close()) and astream() an async generator (aclose())."""
    client = langchain_client()
    stream = client.stream(gr.Request(input="2+2"))
    astream = client.astream(gr.Request(input="2+2"))
    assert callable(stream.close) and callable(astream.aclose)  # type: ignore[attr-defined]
    assert _iter_types(stream) == {"StreamChunk"}
    asyncio.run(astream.aclose())  # type: ignore[attr-defined]


# -- through the guard (GuardedClient.stream / astream) ---------------------------------------

KEY_RULE = {"name": "api_key", "pattern": "sk-[a-z]{4}", "action": "block"}


def key_guard(client: LangChainAgentClient) -> gr.GuardedClient:
    (regex,) = gr.load_plugin("regex").build({"rules": [KEY_RULE]}).middleware
    canaries = [gr.CanaryCase(id="a", input="a", expect=gr.Predicate(fn=bool, label="any"))]
    return gr.Guard(canaries=canaries, middleware=[regex]).wrap(client)


def guarded_items(guarded: gr.GuardedClient, mode: str) -> tuple[list[Any], Exception | None]:
    seen: list[Any] = []

    async def drain() -> None:
        async for item in guarded.astream("key?"):
            seen.append(item)

    try:
        if mode == "sync":
            for item in guarded.stream("key?"):
                seen.append(item)
        else:
            asyncio.run(drain())
    except Exception as exc:
        return seen, exc
    return seen, None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_key_split_across_agent_chunks_never_reaches_the_caller(mode: str) -> None:
    """The agent's model streams 'sk-abcd' in 4-character pieces ('y sk', '-abc', 'd ...'): the
    guard blocks, nothing of the key is released and no StreamEnd follows."""
    client = LangChainAgentClient(RuleChatModel(rule=lambda s, q: "your key sk-abcd is here"))
    pieces = [c.text for c in client.stream(gr.Request(input="key?"))]
    assert not any("sk-abcd" in piece for piece in pieces)  # unguarded: split, never whole
    seen, error = guarded_items(key_guard(client), mode)
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "regex"
    released = "".join(i.text for i in seen if isinstance(i, gr.StreamChunk))
    assert "sk-" not in released and not any(isinstance(i, gr.StreamEnd) for i in seen)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_clean_agent_stream_ends_with_usage_and_disclosure(mode: str) -> None:
    """The released text is the agent's answer; StreamEnd carries the summed usage and the
    served version."""
    guarded = key_guard(langchain_client())
    seen, error = guarded_items(guarded, mode)
    assert error is None
    *chunks, end = seen
    assert isinstance(end, gr.StreamEnd) and end.version == guarded.version
    assert "".join(c.text for c in chunks) == "I don't know."
    assert end.usage is not None and end.usage["output_tokens"] == 3
    assert end.finish_reason == "stop"


def test_a_blocked_agent_stream_stops_the_run() -> None:
    """A block in the first turn closes the agent's stream: the tool that turn asked for never
    runs."""
    lookups = Lookups()
    script = [AIMessage(content="my key is sk-abcd, let me look",
                        tool_calls=[{"name": "lookup", "args": {"city": "Köln"}, "id": "c1"}]),
              AIMessage(content="done")]
    client = LangChainAgentClient(ScriptedChatModel(messages=iter(script)), tools=[lookups.tool])
    seen, error = guarded_items(key_guard(client), "sync")
    assert isinstance(error, gr.GuardrailViolation) and lookups.calls == []
    assert "sk-" not in "".join(i.text for i in seen if isinstance(i, gr.StreamChunk))
