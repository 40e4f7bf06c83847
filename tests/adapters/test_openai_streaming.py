"""The OpenAI adapter's ``stream``/``astream``: the real ``openai`` SDK against the loopback
server speaking SSE (``text/event-stream``, ``data: {...}`` events, ``data: [DONE]``).

The generators are exercised directly: what they yield for text, reasoning and tool calls, that
usage and the finish reason come last, that however the server cuts its deltas and its writes
the joined stream is the answer ``invoke`` gives, that closing early closes the HTTP response,
and that every stream nobody can use raises ``UnusableResponseError``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import pytest
from guardrails_plugins.adapters.openai import OpenAIChatClient
from guardrails_plugins.adapters.openai_testing import (
    UNUSABLE_KINDS,
    ChatRequest,
    FakeOpenAIServer,
    RawBody,
    RawStream,
    StreamPlan,
    unusable_body,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.testing import capture_telemetry

ANSWER = "Grüße aus Köln: the answer is 4 ✓"
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "lookup", "arguments": '{"city": "Köln", "limit": 3}'}}


def client_for(server: FakeOpenAIServer, *, with_async: bool = True) -> OpenAIChatClient:
    sdk = openai.OpenAI(api_key="test-key", base_url=server.base_url, max_retries=0)
    asdk = (openai.AsyncOpenAI(api_key="test-key", base_url=server.base_url, max_retries=0)
            if with_async else None)
    return OpenAIChatClient(sdk, async_client=asdk, model="stream-1")


def collect(client: OpenAIChatClient, mode: str, text: Any = "hi") -> list[gr.StreamChunk]:
    request = gr.Request(input=text)
    if mode == "sync":
        return list(client.stream(request))

    async def gather() -> list[gr.StreamChunk]:
        return [item async for item in client.astream(request)]

    return asyncio.run(gather())


def joined(chunks: list[gr.StreamChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def arguments(chunks: list[gr.StreamChunk]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in chunks:
        for call in chunk.tool_calls:
            out[call.index] = out.get(call.index, "") + call.arguments
    return out


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda request: ANSWER) as fake:
        yield fake


# -- what a stream yields ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stream_yields_text_deltas_then_usage_and_finish_reason(server: FakeOpenAIServer,
                                                                  mode: str) -> None:
    """Each chunk carries only new text; the last carries the finish reason and the usage the
    server sent in its final chunk, under the GenAI token names."""
    chunks = collect(client_for(server), mode)
    assert all(isinstance(chunk, gr.StreamChunk) for chunk in chunks)
    assert joined(chunks) == ANSWER and len(chunks) > 3
    *body, last = chunks
    assert last.finish_reason == "stop" and last.text == ""
    assert last.usage == {"input_tokens": 1, "output_tokens": 8, "total_tokens": 9}
    assert all(chunk.finish_reason is None and chunk.usage is None for chunk in body)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_sdk_is_asked_to_stream_with_usage(server: FakeOpenAIServer, mode: str) -> None:
    """The call is the state's call plus stream=True and include_usage."""
    collect(client_for(server), mode)
    body = server.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "stream-1" and body["messages"][-1] == {"role": "user",
                                                                     "content": "hi"}


def test_a_request_may_not_set_stream_itself(server: FakeOpenAIServer) -> None:
    """stream is the adapter's: invoke and stream both refuse it in request params."""
    client = client_for(server)
    with pytest.raises(ValueError, match="adapter owns"):
        list(client.stream(gr.Request(input="hi", params={"stream": False})))
    with pytest.raises(ValueError, match="adapter owns"):
        client.invoke(gr.Request(input="hi", params={"stream": True}))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tool_call_arguments_stream_per_index(mode: str) -> None:
    """Two tool calls, arguments split in 4-character deltas: id and name come with the first
    delta of each index, the arguments join to what the model sent, finish is tool_calls."""
    second = {"id": "call_2", "type": "function",
              "function": {"name": "weather", "arguments": '{"when": "today"}'}}
    with FakeOpenAIServer(lambda request: {"tool_calls": [CALL, second]}) as server:
        server.plan_stream(StreamPlan(delta_chars=4))
        chunks = collect(client_for(server), mode)
    assert arguments(chunks) == {0: CALL["function"]["arguments"],
                                 1: second["function"]["arguments"]}
    firsts = {}
    for chunk in chunks:
        for call in chunk.tool_calls:
            firsts.setdefault(call.index, call)
    assert (firsts[0].id, firsts[0].name) == ("call_1", "lookup")
    assert (firsts[1].id, firsts[1].name) == ("call_2", "weather")
    assert chunks[-1].finish_reason == "tool_calls" and joined(chunks) == ""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_reasoning_deltas_stream_on_their_own_channel(mode: str) -> None:
    """A server that streams reasoning_content (vLLM, DeepSeek) fills the reasoning channel,
    kept apart from the text."""
    answer = {"content": "4", "reasoning_content": "two and two make four"}
    with FakeOpenAIServer(lambda request: answer) as server:
        chunks = collect(client_for(server), mode)
    assert "".join(c.reasoning for c in chunks) == "two and two make four"
    assert joined(chunks) == "4"


def test_reasoning_under_the_openrouter_name_is_read_too() -> None:
    """``delta.reasoning`` (OpenRouter's name) is the same channel."""
    events = [{"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
              for delta, finish in (({"reasoning": "think"}, None), ({"content": "ok"}, None),
                                    ({}, "stop"))]
    with FakeOpenAIServer(lambda request: RawStream(tuple(events))) as server:
        chunks = collect(client_for(server), "sync")
    assert [c.reasoning for c in chunks if c.reasoning] == ["think"] and joined(chunks) == "ok"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(min_size=1, max_size=40).filter(str.strip),
       delta_chars=st.integers(1, 7), write_size=st.integers(1, 23))
def test_any_cutting_of_deltas_and_writes_joins_to_the_answer(text: str, delta_chars: int,
                                                              write_size: int) -> None:
    """However the server cuts the text into deltas and its bytes into writes (inside
    ``data:`` lines, JSON strings and multi-byte characters), the streamed text joins to exactly
    what ``invoke`` answers."""
    with FakeOpenAIServer(lambda request: text) as server:
        client = client_for(server, with_async=False)
        expected = client.invoke(gr.Request(input="q"))
        server.plan_stream(StreamPlan(delta_chars=delta_chars, write_size=write_size))
        chunks = list(client.stream(gr.Request(input="q")))
    assert joined(chunks) == expected == text
    assert chunks[-1].finish_reason == "stop"


def test_without_an_async_sdk_client_astream_streams_the_sync_one(server: FakeOpenAIServer
                                                                  ) -> None:
    """astream of a sync-only client streams from a worker thread, the same chunks."""
    client = client_for(server, with_async=False)
    assert collect(client, "async") == collect(client, "sync")


def test_usage_of_a_stream_goes_on_the_genai_span() -> None:
    """Token usage from the final chunk is recorded like an invoke's, on the guard's span."""
    tracer_provider, exporter, meter_provider, _ = capture_telemetry()
    with FakeOpenAIServer(lambda request: ANSWER) as server:
        sdk = openai.OpenAI(api_key="k", base_url=server.base_url, max_retries=0)
        client = OpenAIChatClient(sdk, model="stream-1", meter_provider=meter_provider)
        tracer = tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("chat stream-1"):
            list(client.stream(gr.Request(input="hi")))
    span = next(s for s in exporter.get_finished_spans() if s.name == "chat stream-1")
    assert span.attributes["gen_ai.usage.output_tokens"] == 8
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)


# -- closing early ----------------------------------------------------------------------------


def test_closing_the_generator_closes_the_http_stream(server: FakeOpenAIServer) -> None:
    """After two chunks the consumer closes the generator: the server sees the client go away
    before the rest of the stream (it waits for that before event 4)."""
    server.plan_stream(StreamPlan(hold_after=4))
    stream = client_for(server).stream(gr.Request(input="hi"))
    assert next(stream).text and next(stream).text
    stream.close()
    assert server.wait_abandoned(1)


def test_acloseing_the_async_generator_closes_the_http_stream(server: FakeOpenAIServer) -> None:
    """The same through the async SDK client and ``aclose()``."""
    server.plan_stream(StreamPlan(hold_after=4))

    async def take_two_and_close() -> None:
        stream = client_for(server).astream(gr.Request(input="hi"))
        assert (await stream.__anext__()).text and (await stream.__anext__()).text
        await stream.aclose()

    asyncio.run(take_two_and_close())
    assert server.wait_abandoned(1)


def test_acloseing_a_thread_backed_astream_closes_the_sync_stream(server: FakeOpenAIServer
                                                                  ) -> None:
    """Without an async client, ``aclose()`` closes the sync SDK stream in the worker thread."""
    server.plan_stream(StreamPlan(hold_after=3))

    async def take_one_and_close() -> None:
        stream = client_for(server, with_async=False).astream(gr.Request(input="hi"))
        assert (await stream.__anext__()).text
        await stream.aclose()

    asyncio.run(take_one_and_close())
    assert server.wait_abandoned(1)


# -- streams nobody can use -------------------------------------------------------------------


def raw(*events: Any, done: bool = True) -> Callable[[ChatRequest], RawStream]:
    return lambda request: RawStream(events, done=done)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [choice], **extra}


def outcome(client: OpenAIChatClient, mode: str) -> tuple[list[gr.StreamChunk], Exception]:
    """What a stream yielded before it raised, and what it raised."""
    got: list[gr.StreamChunk] = []
    try:
        if mode == "sync":
            for item in client.stream(gr.Request(input="hi")):
                got.append(item)
        else:
            async def drain(stream: AsyncIterator[gr.StreamChunk]) -> None:
                async for item in stream:
                    got.append(item)

            asyncio.run(drain(client.astream(gr.Request(input="hi"))))
    except Exception as exc:
        return got, exc
    raise AssertionError(f"the stream ended without an error after {got!r}")


BROKEN: dict[str, tuple[Callable[[ChatRequest], Any], StreamPlan, str]] = {
    "malformed JSON": (lambda r: ANSWER, StreamPlan(bad_event_at=2), "malformed_chunk"),
    "cut off before [DONE]": (lambda r: ANSWER, StreamPlan(end_after=3), "truncated"),
    "no choices at all": (raw({"id": "c", "object": "chat.completion.chunk", "created": 0,
                               "model": "m", "choices": [],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 0,
                                         "total_tokens": 1}}), StreamPlan(), "no_choices"),
    "a refusal": (raw(chunk({"role": "assistant"}), chunk({"refusal": "I can't"}),
                      chunk(finish="stop")), StreamPlan(), "refusal"),
    "not a completion chunk": (raw({"result": "ok"}), StreamPlan(), "wrong_schema"),
    "a JSON list": (raw([1, 2]), StreamPlan(), "wrong_schema"),
    "content of the wrong type": (raw(chunk({"content": 7}), chunk(finish="stop")),
                                  StreamPlan(), "wrong_schema"),
    "only whitespace": (raw(chunk({"content": "  "}), chunk({"content": "\n"}),
                            chunk(finish="stop")), StreamPlan(), "empty_content"),
    "a tool call without a name": (raw(chunk({"tool_calls": [{"index": 0, "function": {
        "arguments": "{}"}}]}), chunk(finish="tool_calls")), StreamPlan(), "wrong_schema"),
    "a tool call without an index": (raw(chunk({"tool_calls": [{"id": "x", "function": {
        "name": "f", "arguments": "{}"}}]}), chunk(finish="tool_calls")), StreamPlan(),
        "wrong_schema"),
    "no finish reason before [DONE]": (raw(chunk({"content": "hello"})), StreamPlan(),
                                       "truncated"),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("shape", sorted(BROKEN))
def test_an_unusable_stream_raises_the_typed_error(shape: str, mode: str) -> None:
    """Every broken stream ends in ``UnusableResponseError`` with a stable reason, never in a
    quietly shorter answer, and nothing after the fault is yielded."""
    responder, plan, reason = BROKEN[shape]
    with FakeOpenAIServer(responder) as server:
        server.plan_stream(plan)
        got, error = outcome(client_for(server), mode)
    assert isinstance(error, gr.UnusableResponseError), error
    assert error.reason == reason and error.adapter == "openai"
    assert all(item.finish_reason is None for item in got)


@pytest.mark.parametrize("kind", UNUSABLE_KINDS)
def test_every_unusable_completion_is_unusable_as_a_stream_too(kind: str) -> None:
    """What invoke refuses as a whole body, stream refuses when the same answer is streamed."""
    with FakeOpenAIServer(lambda request: RawBody(unusable_body(kind))) as server:
        client = client_for(server, with_async=False)
        with pytest.raises(gr.UnusableResponseError) as whole:
            client.invoke(gr.Request(input="hi"))
        _, error = outcome(client, "sync")
    assert isinstance(error, gr.UnusableResponseError)
    assert error.reason == whole.value.reason


def test_the_error_message_never_quotes_the_content() -> None:
    """A malformed event is described by its structure, never by what it said (it may be a
    hidden canary's answer)."""
    secret = "hidden-canary-answer"
    with FakeOpenAIServer(raw('{"choices": [{"delta": {"content": "' + secret)) as server:
        _, error = outcome(client_for(server), "sync")
    assert isinstance(error, gr.UnusableResponseError) and secret not in str(error)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dropped_connection_raises_the_sdks_connection_error(mode: str) -> None:
    """A connection cut mid-body (no terminating HTTP chunk) is the SDK's APIConnectionError,
    as for invoke: a transient failure the caller may retry, not a short answer."""
    with FakeOpenAIServer(lambda request: ANSWER) as server:
        server.plan_stream(StreamPlan(drop_after=3))
        got, error = outcome(client_for(server), mode)
    assert isinstance(error, openai.APIConnectionError)
    assert joined(got) == "Grüße aus "  # the role event and two words: all before the cut


def test_an_http_error_before_the_stream_is_the_sdks(server: FakeOpenAIServer) -> None:
    """A 500 answer to the streaming call is the SDK's status error, raised on first next()."""
    server.fail_next(500)
    _, error = outcome(client_for(server), "sync")
    assert isinstance(error, openai.InternalServerError)


def test_the_server_streams_the_events_a_real_one_would(server: FakeOpenAIServer) -> None:
    """The loopback server's wire format: text/event-stream, data lines, [DONE] last."""
    import urllib.request

    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user",
                                                                   "content": "x"}]})
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines = [line for line in response.read().decode().split("\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


# -- through the guard (GuardedClient.stream / astream) ---------------------------------------

KEY_RULE = {"name": "api_key", "pattern": "sk-[a-z]{4}", "action": "block"}
KEY_ANSWER = "your key is sk-abcd, keep it safe and never share it with anyone"


def key_guard(server: FakeOpenAIServer) -> gr.GuardedClient:
    (regex,) = gr.load_plugin("regex").build({"rules": [KEY_RULE]}).middleware
    canaries = [gr.CanaryCase(id="a", input="a", expect=gr.Predicate(fn=bool, label="any"))]
    return gr.Guard(canaries=canaries, middleware=[regex]).wrap(client_for(server))


def guarded_outcome(guarded: gr.GuardedClient, mode: str, text: str = "key?"
                    ) -> tuple[list[Any], Exception | None]:
    """Every item the guard's caller got, and the error that ended the stream (if any)."""
    seen: list[Any] = []

    async def drain() -> None:
        async for item in guarded.astream(text):
            seen.append(item)

    try:
        if mode == "sync":
            for item in guarded.stream(text):
                seen.append(item)
        else:
            asyncio.run(drain())
    except Exception as exc:
        return seen, exc
    return seen, None


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_key_split_across_two_sse_events_never_reaches_the_caller(mode: str) -> None:
    """'sk-abcd' arrives as 'sk-a' and 'bcd,' (two SSE events, each harmless alone): the guard
    blocks, nothing of the key is released, no StreamEnd follows, and the block closes the HTTP
    stream (the server, waiting before its next event, sees the client go away)."""
    with FakeOpenAIServer(lambda request: KEY_ANSWER) as server:
        server.plan_stream(StreamPlan(delta_chars=4))
        pieces = [c.text for c in client_for(server).stream(gr.Request(input="key?"))]
        assert "sk-a" in pieces and "bcd," in pieces  # unguarded: the key, split in two events
        server.plan_stream(StreamPlan(delta_chars=4, hold_after=8))
        seen, error = guarded_outcome(key_guard(server), mode)
        assert isinstance(error, gr.GuardrailViolation) and error.policy == "regex"
        released = "".join(i.text for i in seen if isinstance(i, gr.StreamChunk))
        assert "sk-" not in released and not any(isinstance(i, gr.StreamEnd) for i in seen)
        assert server.wait_abandoned(1)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_clean_stream_ends_with_usage_and_disclosure(mode: str) -> None:
    """A stream the policy clears: the released text is the whole answer, and the StreamEnd
    carries the usage of the server's final chunk, the finish reason and the served version."""
    with FakeOpenAIServer(lambda request: ANSWER) as server:
        guarded = key_guard(server)
        seen, error = guarded_outcome(guarded, mode)
    assert error is None
    *chunks, end = seen
    assert isinstance(end, gr.StreamEnd)
    assert "".join(c.text for c in chunks) == ANSWER
    assert end.usage == {"input_tokens": 1, "output_tokens": 8, "total_tokens": 9}
    assert end.finish_reason == "stop" and end.version == guarded.version
    assert end.metadata["guardrails.served_version"] == guarded.version


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_broken_upstream_reaches_the_caller_as_the_typed_error(mode: str) -> None:
    """A body cut off before [DONE] ends the caller's stream with UnusableResponseError, not
    with a StreamEnd after a shorter answer."""
    with FakeOpenAIServer(lambda request: ANSWER) as server:
        server.plan_stream(StreamPlan(end_after=5))
        seen, error = guarded_outcome(key_guard(server), mode)
    assert isinstance(error, gr.UnusableResponseError) and error.reason == "truncated"
    assert not any(isinstance(i, gr.StreamEnd) for i in seen)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_key_split_across_tool_argument_deltas_is_blocked(mode: str) -> None:
    """The same key inside a tool call's arguments, split over argument deltas: the guard's
    tool-argument channel blocks it, and no delta holding part of it is released."""
    call = {"id": "call_k", "type": "function",
            "function": {"name": "store", "arguments": '{"note": "sk-abcd is the key"}'}}
    with FakeOpenAIServer(lambda request: {"tool_calls": [call]}) as server:
        server.plan_stream(StreamPlan(delta_chars=3))
        seen, error = guarded_outcome(key_guard(server), mode)
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "regex"
    released = "".join(d.arguments for i in seen if isinstance(i, gr.StreamChunk)
                       for d in i.tool_calls)
    assert "sk-" not in released


def test_cancelling_a_thread_backed_astream_mid_read_closes_it_cleanly(server: FakeOpenAIServer
                                                                       ) -> None:
    """The consumer is cancelled while the worker thread waits for the next event: it sees
    CancelledError (not 'generator already executing'), and the sync stream is closed once the
    read in flight returns."""
    server.plan_stream(StreamPlan(hold_after=3, hold_timeout=0.5))

    async def cancelled_mid_read() -> None:
        stream = client_for(server, with_async=False).astream(gr.Request(input="hi"))
        assert (await stream.__anext__()).text and (await stream.__anext__()).text
        reader = asyncio.ensure_future(stream.__anext__())  # waits: the server holds event 3
        await asyncio.sleep(0)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await stream.aclose()

    asyncio.run(cancelled_mid_read())


SAFE = st.text(alphabet="abc xyz,.Äö✓\n", max_size=30)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=SAFE, after=SAFE, delta_chars=st.integers(1, 6), write_size=st.integers(1, 17))
def test_however_the_wire_cuts_a_key_the_guard_releases_only_text_before_it(
        before: str, after: str, delta_chars: int, write_size: int) -> None:
    """For any text around the key and any cutting of deltas and TCP writes, the guard blocks,
    and what it released is a prefix of the answer that ends before the key starts."""
    answer = f"{before} sk-abcd {after}"
    with FakeOpenAIServer(lambda request: answer) as server:
        server.plan_stream(StreamPlan(delta_chars=delta_chars, write_size=write_size))
        seen, error = guarded_outcome(key_guard(server), "sync")
    assert isinstance(error, gr.GuardrailViolation)
    released = "".join(i.text for i in seen if isinstance(i, gr.StreamChunk))
    assert answer.startswith(released) and len(released) <= answer.index("sk-abcd")
