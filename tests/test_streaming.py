"""Streaming through the guard: no text reaches the caller before every output policy cleared it
in its final context; blocks close the upstream; every channel is checked (docs/streaming.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

import guardrails as gr
from guardrails._telemetry import (
    ATTR_BLOCKED_BY,
    ATTR_STREAM_ABORT,
    ATTR_STREAM_CHUNKS,
    ATTR_STREAM_FIRST_RELEASE,
    ATTR_STREAM_MAX_HELD,
    EVENT_STREAM_ABORTED,
    METRIC_BLOCKED,
    SPAN_INVOKE,
)
from guardrails.testing import StreamClient, capture_telemetry

CASES = [gr.CanaryCase(id="a", input="a", expect="A"), gr.CanaryCase(id="b", input="b", expect="B")]
KEY_RULE = {"name": "api_key", "pattern": "sk-[a-z]{4}", "action": "block"}


def policy(name: str, **settings: Any) -> Any:
    (middleware,) = gr.load_plugin(name).build(settings).middleware
    return middleware


def guarded(chunks: Any, *middleware: Any, client: StreamClient | None = None,
            **kwargs: Any) -> gr.GuardedClient:
    return gr.Guard(canaries=CASES, middleware=middleware, **kwargs).wrap(
        client or StreamClient(chunks))


def drain(items: Iterator[Any]) -> tuple[list[gr.StreamChunk], list[Any], BaseException | None]:
    """(released chunks, every item, the error that ended the stream)."""
    seen: list[Any] = []
    try:
        for item in items:
            seen.append(item)
    except gr.GuardrailsError as exc:
        return [i for i in seen if isinstance(i, gr.StreamChunk)], seen, exc
    return [i for i in seen if isinstance(i, gr.StreamChunk)], seen, None


def text(chunks: list[gr.StreamChunk]) -> str:
    return "".join(c.text for c in chunks)


async def adrain(items: AsyncIterator[Any]) -> tuple[list[Any], BaseException | None]:
    seen: list[Any] = []
    try:
        async for item in items:
            seen.append(item)
    except gr.GuardrailsError as exc:
        return seen, exc
    return seen, None


# -- the hold-back window ---------------------------------------------------------------------


def test_a_forbidden_value_split_across_chunks_never_reaches_the_caller() -> None:
    """litellm #41611: `sk-` in one chunk and the rest in the next is still one match; the
    stream ends blocked and nothing of the key was released."""
    client = guarded(["my key is s", "k-", "ab", "cd, keep it"], policy("regex", rules=[KEY_RULE]))
    chunks, _, error = drain(client.stream("hi"))
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "regex"
    assert "s" not in text(chunks).removeprefix("my key i")
    assert text(chunks) in "my key is "


def test_a_redacted_value_split_across_chunks_is_redacted_as_invoke_redacts_it() -> None:
    """The released text, joined, is exactly what invoke returns after the policies."""
    rule = {**KEY_RULE, "action": "redact", "replacement": "[KEY]"}
    chunks = ["a sk-a", "bcd b s", "k-", "wxyz", " end sk-qq"]
    client = guarded(chunks, policy("regex", rules=[rule]))
    released, items, error = drain(client.stream("hi"))
    assert error is None and isinstance(items[-1], gr.StreamEnd)
    assert text(released) == client.invoke("hi").output == "a [KEY] b [KEY] end sk-qq"


def test_text_is_released_once_it_lies_max_span_behind_the_head() -> None:
    """A long answer streams: text well behind the longest possible match is released
    before the upstream has finished."""
    client = StreamClient(["word "] * 40)
    guard = guarded(None, policy("regex", rules=[KEY_RULE]), client=client)
    stream = guard.stream("hi")
    first = next(stream)
    assert isinstance(first, gr.StreamChunk) and first.text
    assert client.yielded < 40
    stream.close()


def test_a_deny_listed_word_split_across_chunks_is_blocked() -> None:
    """The deny list holds back its longest entry and the word boundaries around it."""
    client = guarded(["we never say pass", "wo", "rd here"],
                     policy("deny_list", words=["password"], apply_to=["output"]))
    chunks, _, error = drain(client.stream("hi"))
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "deny_list"
    assert "pass" not in text(chunks)


def test_a_deny_listed_word_inside_a_longer_word_passes_as_in_invoke() -> None:
    """The whole-word rule needs the character after the entry: the stream waits for it."""
    client = guarded(["a password", "s list"],
                     policy("deny_list", words=["password"], apply_to=["output"]))
    chunks, _, error = drain(client.stream("hi"))
    assert error is None and text(chunks) == "a passwords list"


def test_an_unbounded_pattern_holds_the_whole_response_back() -> None:
    """`.*` has no width: nothing is released before the upstream ends."""
    client = StreamClient(["no secret here "] * 5)
    guard = guarded(None, policy("regex", rules=[{"name": "s", "pattern": "secret:.*x"}]),
                    client=client)
    stream = guard.stream("hi")
    next(stream)
    assert client.yielded == 5


def test_a_stream_window_bounds_an_unbounded_blocking_pattern() -> None:
    """With `stream_window`, an unbounded rule holds back that many characters only."""
    client = StreamClient(["no secret here "] * 20)
    rule = {"name": "s", "pattern": "secret:.*x", "stream_window": 32}
    guard = guarded(None, policy("regex", rules=[rule]), client=client)
    stream = guard.stream("hi")
    next(stream)
    assert client.yielded < 20
    stream.close()


def test_a_stream_window_on_a_redacting_unbounded_pattern_is_refused_naming_the_policy() -> None:
    """A redaction that a window could cut short cannot be honoured: refused at build."""
    rule = {"name": "s", "pattern": "secret:.*", "action": "redact", "stream_window": 32}
    with pytest.raises(gr.ConfigError, match=r"(?s)regex.*rule 's'.*stream_window"):
        policy("regex", rules=[rule])


def test_a_malformed_stream_side_is_refused_when_the_guard_is_built() -> None:
    """A policy declaring a negative max_span is named in a ConfigError by Guard()."""

    class Bad:
        max_span = -1
        channels = frozenset({"text"})

        def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
            return []

    class Middleware:
        def __call__(self, request: gr.Request, call_next: Any) -> gr.Response:
            return call_next(request)

        def streaming(self) -> gr.StreamPolicy:
            return gr.StreamPolicy("bad", checks=(Bad(),))

    with pytest.raises(gr.ConfigError, match=r"policy 'bad'.*max_span"):
        gr.Guard(canaries=CASES, middleware=[Middleware()])


# -- whole-response policies and the cap -------------------------------------------------------


def test_a_schema_policy_buffers_to_the_end_then_releases_a_valid_answer() -> None:
    """json_schema needs the whole response: nothing is released before the upstream ends."""
    client = StreamClient(['{"an', 'swer": ', '42}'])
    guard = guarded(None, policy("json_schema", output_schema={"type": "object",
                                                                "required": ["answer"]}),
                    client=client)
    stream = guard.stream("hi")
    first = next(stream)
    assert client.yielded == 3 and first.text == '{"answer": 42}'


def test_a_schema_policy_blocks_an_invalid_answer_with_nothing_released() -> None:
    """An answer that fails the schema ends the stream blocked, no text released."""
    guard = guarded(['{"other":', ' 1}'], policy("json_schema", output_schema={
        "type": "object", "required": ["answer"]}))
    _chunks, items, error = drain(guard.stream("hi"))
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "json_schema"
    assert items == []


def test_pii_is_redacted_on_the_whole_response() -> None:
    """pii is a whole-response policy: the redacted answer equals invoke's."""
    guard = guarded(["mail me at ann@exa", "mple.org today"], policy("pii", apply_to=["output"]))
    chunks, _, error = drain(guard.stream("hi"))
    assert error is None and text(chunks) == guard.invoke("hi").output == "mail me at [EMAIL] today"


def test_past_the_cap_the_stream_fails_closed_and_closes_the_upstream() -> None:
    """A whole-response policy holding more than stream_max_held bytes ends the stream."""
    client = StreamClient(["x" * 100] * 10)
    guard = guarded(None, policy("json_schema", output_schema={"type": "string"},
                                 parse_json=False), client=client, stream_max_held=500)
    chunks, _, error = drain(guard.stream("hi"))
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "stream_max_held"
    assert chunks == [] and client.closed


def test_a_cap_of_zero_opts_out_of_the_cap() -> None:
    """stream_max_held = 0 buffers as much as the policy needs."""
    guard = guarded(["x" * 100] * 10, policy("json_schema", output_schema={"type": "string"},
                                             parse_json=False), stream_max_held=0)
    chunks, _, error = drain(guard.stream("hi"))
    assert error is None and text(chunks) == "x" * 1000


def test_size_limit_stops_the_stream_at_the_first_character_over_the_limit() -> None:
    """Released text never passes max_output_chars; the stream ends blocked."""
    guard = guarded(["abcde"] * 10, policy("size_limit", max_output_chars=12))
    chunks, _, error = drain(guard.stream("hi"))
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "size_limit"
    assert len(text(chunks)) <= 12


# -- early abort ------------------------------------------------------------------------------


def test_a_block_closes_the_upstream_stream() -> None:
    """The client's generator is closed as soon as the block is decided."""
    client = StreamClient(["a sk-abcd", *["more "] * 50])
    drain(guarded(None, policy("regex", rules=[KEY_RULE]), client=client).stream("hi"))
    assert client.closed and client.yielded < 51


def test_no_stream_end_follows_a_block() -> None:
    """The caller's stream ends with the violation; no StreamEnd was yielded."""
    _, items, error = drain(guarded(["x sk-abcd y"], policy("regex", rules=[KEY_RULE])).stream("q"))
    assert isinstance(error, gr.GuardrailViolation)
    assert not any(isinstance(item, gr.StreamEnd) for item in items)


def test_an_upstream_error_mid_stream_ends_the_stream_with_that_error_releasing_nothing_held() -> None:
    """The client's own typed error reaches the caller; the held-back tail is dropped."""
    error = gr.UnusableResponseError("no finish reason", adapter="test", reason="no_answer")
    client = StreamClient(["hello world, this is long enough ", "tail"], fail_after=1,
                          error=error)
    chunks, _items, raised = drain(guarded(None, policy("regex", rules=[KEY_RULE]),
                                          client=client).stream("hi"))
    assert raised is error
    assert text(chunks) == "hello world, this is long "[: len(text(chunks))]
    assert not text(chunks).endswith("enough ")


def test_an_input_block_happens_before_the_upstream_opens() -> None:
    """Input policies run as for invoke: a blocked input never reaches the client."""
    client = StreamClient(["fine"])
    guard = guarded(None, policy("regex", rules=[{**KEY_RULE, "apply_to": ["input"]}]),
                    client=client)
    _, _, error = drain(guard.stream("here is sk-abcd"))
    assert isinstance(error, gr.GuardrailViolation) and client.opened == 0


def test_closing_the_callers_stream_closes_the_upstream() -> None:
    """A caller that stops reading early does not leave the client's stream open."""
    client = StreamClient(["word "] * 40)
    stream = guarded(None, policy("regex", rules=[KEY_RULE]), client=client).stream("hi")
    next(stream)
    stream.close()
    assert client.closed


def test_a_crashing_stream_check_blocks_under_on_error_block() -> None:
    """A policy's own failure on a stream follows on_error, as in invoke."""

    class Crashing:
        max_span = 4
        channels = frozenset({"text"})

        def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
            raise RuntimeError("bug")

    class Middleware:
        def __call__(self, request: gr.Request, call_next: Any) -> gr.Response:
            return call_next(request)

        def streaming(self) -> gr.StreamPolicy:
            return gr.StreamPolicy("crashy", checks=(Crashing(),))

    wrapped = gr.apply_on_error(Middleware(), policy="crashy", on_error="block")
    _, _, error = drain(guarded(["some text here"], wrapped).stream("hi"))
    assert isinstance(error, gr.GuardrailViolation) and error.policy == "crashy"


# -- every channel ----------------------------------------------------------------------------


def test_tool_call_arguments_are_checked_per_call_index() -> None:
    """A key split across two argument deltas of one tool call is blocked; the deltas of
    another call in between do not join it."""
    chunks = [gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=0, id="c0", name="f",
                                                          arguments='{"k": "s'),)),
              gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=1, id="c1", name="g",
                                                          arguments="k-abcd"),)),
              gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=0, arguments='k-wxyz"}'),))]
    _, _, error = drain(guarded(chunks, policy("regex", rules=[KEY_RULE])).stream("hi"))
    assert isinstance(error, gr.GuardrailViolation)
    assert "tool call 0" in str(error)


def test_tool_call_arguments_of_separate_calls_are_not_joined() -> None:
    """`s` closing call 0 and `k-abcd` in call 1 are two texts: no match, released whole."""
    chunks = [gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=0, id="c0", name="f",
                                                          arguments="s"),)),
              gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=1, id="c1", name="g",
                                                          arguments="k-abcd"),))]
    released, _items, error = drain(guarded(chunks, policy("regex", rules=[KEY_RULE])).stream("hi"))
    assert error is None
    arguments: dict[int, str] = {}
    names = {}
    for chunk in released:
        for delta in chunk.tool_calls:
            arguments[delta.index] = arguments.get(delta.index, "") + delta.arguments
            if delta.name:
                names[delta.index] = delta.name
    assert arguments == {0: "s", 1: "k-abcd"} and names == {0: "f", 1: "g"}


def test_reasoning_deltas_pass_the_policies_too() -> None:
    """A redaction rule redacts the reasoning channel as it redacts text."""
    rule = {**KEY_RULE, "action": "redact", "replacement": "[KEY]"}
    chunks = [gr.StreamChunk(reasoning="use s"), gr.StreamChunk(reasoning="k-abcd then"),
              gr.StreamChunk(text="done")]
    released, _, error = drain(guarded(chunks, policy("regex", rules=[rule])).stream("hi"))
    assert error is None
    assert "".join(c.reasoning for c in released) == "use [KEY] then"
    assert text(released) == "done"


def test_a_schema_policy_applies_to_the_answer_text_only() -> None:
    """json_schema validates the text; reasoning deltas are not JSON and need not be."""
    chunks = [gr.StreamChunk(reasoning="thinking..."), gr.StreamChunk(text='"ok"')]
    released, _, error = drain(guarded(chunks, policy("json_schema",
                                                      output_schema={"type": "string"})
                                       ).stream("hi"))
    assert error is None and text(released) == '"ok"'


# -- the end of the stream --------------------------------------------------------------------


def test_the_stream_end_discloses_what_invoke_discloses() -> None:
    """Served version, self_improving and last change, as in invoke's response metadata."""
    guard = guarded(["hello"], policy("regex", rules=[KEY_RULE]))
    end = list(guard.stream("hi"))[-1]
    response = guard.invoke("hi")
    assert isinstance(end, gr.StreamEnd) and end.version == response.version == guard.version
    assert end.metadata == response.metadata


def test_the_stream_end_carries_usage_and_finish_reason() -> None:
    """Usage and the finish reason from the client's last chunk reach the StreamEnd."""
    chunks = [gr.StreamChunk(text="hi"), gr.StreamChunk(usage={"input_tokens": 3,
                                                               "output_tokens": 1},
                                                        finish_reason="stop")]
    end = list(guarded(chunks, policy("regex", rules=[KEY_RULE])).stream("q"))[-1]
    assert end.usage == {"input_tokens": 3, "output_tokens": 1} and end.finish_reason == "stop"


def test_a_client_without_stream_is_streamed_as_one_chunk_from_invoke() -> None:
    """A plain client answers through invoke; its text arrives as one chunk, then the end."""
    client = gr.testing.DictClient({"default": "whole answer"})
    guard = gr.Guard(canaries=CASES, middleware=[policy("regex", rules=[KEY_RULE])]).wrap(client)
    items = list(guard.stream("hi"))
    assert [type(i) for i in items] == [gr.StreamChunk, gr.StreamEnd]
    assert items[0].text == "whole answer"


def test_a_middleware_without_a_stream_side_makes_the_stream_answer_through_invoke() -> None:
    """A plain function middleware cannot check a stream: the client is called through
    invoke and the checked answer comes as one chunk."""

    def shout(request: gr.Request, call_next: Any) -> gr.Response:
        response = call_next(request)
        return response.model_copy(update={"output": response.output.upper()})

    client = StreamClient(["quiet ", "words"])
    items = list(guarded(None, shout, client=client).stream("hi"))
    assert items[0].text == "QUIET WORDS" and client.opened == 0


def test_stream_client_records_that_the_guard_closed_it() -> None:
    """guardrails.testing.StreamClient: closed, yielded and opened say what happened."""
    client = StreamClient(["a", "b", "c"])
    stream = client.stream(gr.Request(input="x"))
    next(stream)
    stream.close()
    assert client.closed and client.yielded == 0 and client.opened == 1


# -- async ------------------------------------------------------------------------------------


def test_astream_releases_what_stream_releases() -> None:
    """The async twin gives the same chunks and the same end."""
    rule = {**KEY_RULE, "action": "redact", "replacement": "[KEY]"}
    guard = guarded(["a s", "k-abcd b"], policy("regex", rules=[rule]))
    items, error = asyncio.run(adrain(guard.astream("hi")))
    assert error is None and isinstance(items[-1], gr.StreamEnd)
    assert text(items[:-1]) == "a [KEY] b"


def test_an_async_block_closes_the_async_upstream() -> None:
    """astream closes the client's async generator (aclose) on a block."""
    client = StreamClient(["a sk-abcd", *["more "] * 50])
    guard = guarded(None, policy("regex", rules=[KEY_RULE]), client=client)
    items, error = asyncio.run(adrain(guard.astream("hi")))
    assert isinstance(error, gr.GuardrailViolation) and client.closed
    assert not any(isinstance(item, gr.StreamEnd) for item in items)


def test_astream_over_a_sync_only_stream_runs_it_in_a_thread() -> None:
    """A client with only a sync stream is read from a worker thread, same result."""

    class SyncOnly(StreamClient):
        astream = None  # type: ignore[assignment]

    guard = guarded(None, policy("regex", rules=[KEY_RULE]), client=SyncOnly(["one ", "two"]))
    items, error = asyncio.run(adrain(guard.astream("hi")))
    assert error is None and text(items[:-1]) == "one two"


# -- telemetry --------------------------------------------------------------------------------


def _traced(chunks: list[Any], *middleware: Any) -> tuple[gr.GuardedClient, Any, Any]:
    tracer_provider, exporter, meter_provider, reader = capture_telemetry()
    guard = gr.Guard(canaries=CASES, middleware=middleware, tracer_provider=tracer_provider,
                     meter_provider=meter_provider).wrap(StreamClient(chunks))
    return guard, exporter, reader


def _counter(reader: Any, name: str) -> list[Any]:
    points = []
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


def test_a_completed_stream_records_first_release_held_bytes_and_chunks_on_the_invoke_span() -> None:
    """The invoke span of a stream carries its timing and buffer figures, no abort reason."""
    guard, exporter, _ = _traced(["word "] * 10, policy("regex", rules=[KEY_RULE]))
    list(guard.stream("hi"))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_INVOKE]
    attributes = dict(span.attributes)
    assert attributes[ATTR_STREAM_CHUNKS] == 10
    assert 0 < attributes[ATTR_STREAM_MAX_HELD] <= 9 + 5
    assert attributes[ATTR_STREAM_FIRST_RELEASE] >= 0
    assert ATTR_STREAM_ABORT not in attributes


def test_a_blocked_stream_is_recorded_like_a_blocked_call() -> None:
    """Metric by policy, span event and attribute, and one structured log line."""
    guard, exporter, reader = _traced(["x sk-abcd y"], policy("regex", rules=[KEY_RULE]))
    with capture_logs() as logs:
        drain(guard.stream("hi"))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_INVOKE]
    assert span.attributes[ATTR_STREAM_ABORT] == "blocked"
    assert span.attributes[ATTR_BLOCKED_BY] == "regex"
    assert [e.name for e in span.events] == [EVENT_STREAM_ABORTED]
    (point,) = _counter(reader, METRIC_BLOCKED)
    assert point.value == 1 and point.attributes[ATTR_BLOCKED_BY] == "regex"
    (line,) = [entry for entry in logs if entry["event"] == "guardrails.stream_aborted"]
    assert line["reason"] == "blocked" and line["policy"] == "regex"
    assert "sk-abcd" not in str(line)


# -- rollout ----------------------------------------------------------------------------------


def _answers(state: dict[str, Any], request: gr.Request) -> list[str]:
    if request.input in ("a", "b"):
        return [str(request.input).upper()]
    return [f"rev{state['rev']} ", "answer"]


def test_during_a_rollout_the_stream_comes_from_the_assigned_version_and_says_so() -> None:
    """Each streamed call is answered by the arm the assignment picks, and its StreamEnd
    names that version and arm, as invoke's response does."""
    from guardrails.rollout import RolloutPolicy

    rollout = RolloutPolicy(steps=(50, 100), min_samples=1000, evaluate_every=1000, shadow=False)
    client = StreamClient(_answers, {"rev": 0})
    guard = gr.Guard(canaries=CASES, rollout=rollout,
                     middleware=[policy("regex", rules=[KEY_RULE])]).wrap(client)
    incumbent = guard.version
    decision = guard.propose({"parent": incumbent, "patch": [
        {"op": "replace", "path": "/rev", "value": 1}]})
    assert decision.accepted and decision.candidate is not None
    arms = set()
    for user in range(40):
        items = list(guard.stream(gr.Request(input="live", metadata={"user_id": f"u{user}"})))
        end = items[-1]
        answer = text(items[:-1])
        version = decision.candidate if answer.startswith("rev1") else incumbent
        assert end.version == version == end.metadata["guardrails.served_version"]
        assert end.metadata["guardrails.rollout.arm"] == (
            "candidate" if version == decision.candidate else "incumbent")
        arms.add(end.metadata["guardrails.rollout.arm"])
    assert arms == {"candidate", "incumbent"}


# -- hostile clients --------------------------------------------------------------------------


def test_a_stream_yielding_something_else_than_text_ends_with_a_typed_error() -> None:
    """A client whose stream yields a dict gets UnusableResponseError, nothing released."""
    client = StreamClient(["fine text ", {"not": "a chunk"}])  # type: ignore[list-item]
    _, items, error = drain(guarded(None, policy("regex", rules=[KEY_RULE]),
                                    client=client).stream("hi"))
    assert isinstance(error, gr.UnusableResponseError) and error.reason == "wrong_type"
    assert client.closed and not any(isinstance(i, gr.StreamEnd) for i in items)


def test_a_stream_method_that_raises_before_yielding_is_recorded_as_a_failed_call() -> None:
    """stream() raising at once (not a generator) ends the stream with its error, on the span."""

    class Refusing(StreamClient):
        def stream(self, request: gr.Request) -> Iterator[str]:  # type: ignore[override]
            raise ConnectionError("refused")

    tracer_provider, exporter, meter_provider, _ = capture_telemetry()
    guard = gr.Guard(canaries=CASES, middleware=[policy("regex", rules=[KEY_RULE])],
                     tracer_provider=tracer_provider, meter_provider=meter_provider)
    with pytest.raises(ConnectionError):
        list(guard.wrap(Refusing(["x"])).stream("hi"))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_INVOKE]
    assert span.attributes[ATTR_STREAM_ABORT] == "error"


def test_an_async_upstream_error_ends_astream_with_that_error() -> None:
    """astream passes the client's own exception on; no StreamEnd."""
    client = StreamClient(["some text that is long ", "tail"], fail_after=1,
                          error=gr.UnusableResponseError("bad", adapter="t", reason="no_answer"))
    guard = guarded(None, policy("regex", rules=[KEY_RULE]), client=client)
    items, error = asyncio.run(adrain(guard.astream("hi")))
    assert isinstance(error, gr.UnusableResponseError)
    assert not any(isinstance(item, gr.StreamEnd) for item in items)


class _Named(StreamClient):
    def genai_attributes(self) -> dict[str, Any]:
        return {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}

    def with_state(self, state: dict[str, Any]) -> _Named:
        return _Named(self.chunks, state)


@pytest.mark.parametrize(("capture", "expected"), [("SPAN_ONLY", '"a [KEY] b"'),
                                                    ("NO_CONTENT", None)])
def test_content_capture_records_only_released_text_and_only_when_opted_in(
        capture: str, expected: str | None) -> None:
    """The GenAI span's output is the released (redacted) text with capture on, absent off."""
    tracer_provider, exporter, meter_provider, _ = capture_telemetry()
    rule = {**KEY_RULE, "action": "redact", "replacement": "[KEY]"}
    guard = gr.Guard(canaries=CASES, middleware=[policy("regex", rules=[rule])],
                     tracer_provider=tracer_provider, meter_provider=meter_provider,
                     capture_content=capture).wrap(_Named(["a s", "k-abcd b"]))
    list(guard.stream("hi"))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat m"]
    assert span.attributes.get("gen_ai.output.messages") == expected
    assert span.parent is not None


def test_an_overflow_is_recorded_like_a_blocked_call_with_its_own_reason() -> None:
    """Passing stream_max_held counts as blocked by `stream_max_held`, abort reason overflow."""
    tracer_provider, exporter, meter_provider, reader = capture_telemetry()
    schema = policy("json_schema", output_schema={"type": "string"}, parse_json=False)
    guard = gr.Guard(canaries=CASES, middleware=[schema], stream_max_held=100,
                     tracer_provider=tracer_provider, meter_provider=meter_provider)
    drain(guard.wrap(StreamClient(["y" * 60] * 3)).stream("hi"))
    (span,) = [s for s in exporter.get_finished_spans() if s.name == SPAN_INVOKE]
    assert span.attributes[ATTR_STREAM_ABORT] == "overflow"
    (point,) = _counter(reader, METRIC_BLOCKED)
    assert point.attributes[ATTR_BLOCKED_BY] == "stream_max_held"


def test_a_negative_cap_is_refused_when_the_guard_is_built() -> None:
    """stream_max_held is a number of bytes >= 0; a negative one is a ConfigError."""
    with pytest.raises(gr.ConfigError, match="stream_max_held"):
        gr.Guard(canaries=CASES, stream_max_held=-1)


def test_the_client_is_asked_the_request_as_the_input_policies_left_it() -> None:
    """An input redaction applies before the stream opens, as in invoke."""
    client = StreamClient(["fine"])
    rule = {**KEY_RULE, "apply_to": ["input"], "action": "redact", "replacement": "[KEY]"}
    list(guarded(None, policy("regex", rules=[rule]), client=client).stream("key sk-abcd"))
    asyncio.run(adrain(guarded(None, policy("regex", rules=[rule]),
                               client=client).astream("key sk-wxyz")))
    assert [request.input for request in client.calls] == ["key [KEY]", "key [KEY]"]


# -- redaction counts --------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "settings", "answer"), [
    ("regex", {"rules": [{"name": "key", "pattern": "sk-[a-z]{4}", "action": "redact",
                          "replacement": "[KEY]"}]}, "a sk-abcd and sk-wxyz, and sk-qq"),
    ("deny_list", {"words": ["secret", "hidden"], "action": "redact"},
     "secret one, hidden two, secret three"),
    ("pii", {}, "mail a@b.example or c@d.example, card 4111 1111 1111 1111"),
])
def test_the_stream_end_reports_the_redactions_invoke_reports(name: str, settings: dict[str, Any],
                                                              answer: str) -> None:
    """guardrails.redactions on the StreamEnd equals invoke's, input and output, for any chunking."""
    for size in (1, 3, 7, len(answer)):
        chunks = [answer[i:i + size] for i in range(0, len(answer), size)]
        client = guarded(chunks, policy(name, **settings))
        request = f"input {answer}"
        expected = client.invoke(request).metadata["guardrails.redactions"]
        assert set(expected[name]) == {"input", "output"}
        _, items, error = drain(client.stream(request))
        assert error is None
        assert items[-1].metadata["guardrails.redactions"] == expected, size
        seen, aerror = asyncio.run(adrain(client.astream(request)))
        assert aerror is None and seen[-1].metadata["guardrails.redactions"] == expected


def test_a_stream_with_nothing_redacted_reports_no_redactions() -> None:
    """As on invoke, the key is absent when no policy replaced anything."""
    client = guarded(["clean ", "text"], policy("pii"))
    assert "guardrails.redactions" not in client.invoke("x").metadata
    _, items, _ = drain(client.stream("x"))
    assert "guardrails.redactions" not in items[-1].metadata
