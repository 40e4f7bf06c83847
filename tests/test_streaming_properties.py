"""The streaming law (docs/streaming.md): for any text, any chunking and any regex/deny-list
policies, the stream's verdict is invoke's, its released text joined is invoke's answer, and
no released character lies inside a span the whole-text check blocks."""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import guardrails as gr
from guardrails.testing import StreamClient

CASES = [gr.CanaryCase(id="a", input="a", expect="A")]

# Characters the patterns below care about, plus multi-code-point ones: a combining accent
# (é as e + U+0301), an emoji, a newline. A chunk boundary may fall between any two.
ALPHABET = ["a", "b", "s", "k", "-", "x", "y", "1", " ", "\n", "e", "\u0301", "é", "😀", "A"]
PATTERNS = ["sk-[a-z]{2}", r"\bab\b", "a.b", "(?<=x)yy", "e\u0301", "😀{2}", r"x\d?y",
            r"b\s*$", "(?i)AB", "ab$"]
WORDS = ["ab", "sk", "é", "x y", "ba ab"]
# Whole matches and near misses of the patterns and words, so that most texts hold some and
# the cuts fall inside them.
FRAGMENTS = ["sk-ab", "sk-xy", "sk-1", " ab ", "aab", "a1b", "xyy", "x1y", "xy", "😀😀",
             "e\u0301", "b\n", "ab\n", "b  ", "AB", "x y", "ba ab", "é"]

actions = st.sampled_from(["block", "redact"])
replacements = st.sampled_from(["[R]", "", "sk-", "ab"])


@st.composite
def regex_policy(draw: Any, block_only: bool) -> dict[str, Any]:
    patterns = draw(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True))
    rules = [{"name": f"r{i}", "pattern": pattern, "apply_to": ["output"],
              "action": "block" if block_only else draw(actions),
              "replacement": draw(replacements)} for i, pattern in enumerate(patterns)]
    return {"plugin": "regex", "rules": rules}


@st.composite
def deny_policy(draw: Any, block_only: bool) -> dict[str, Any]:
    return {"plugin": "deny_list", "apply_to": ["output"],
            "words": draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True)),
            "whole_words": draw(st.booleans()), "case_sensitive": draw(st.booleans()),
            "action": "block" if block_only else draw(actions),
            "replacement": draw(replacements)}


def policies(block_only: bool = False) -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.one_of(regex_policy(block_only), deny_policy(block_only))
    return st.lists(one, min_size=1, max_size=3)


size_limits = st.builds(lambda n: {"plugin": "size_limit", "max_output_chars": n},
                        st.integers(1, 60))


@st.composite
def chunked(draw: Any) -> list[str]:
    """A text cut at any points, empty chunks included."""
    text = "".join(draw(st.lists(st.sampled_from(ALPHABET + FRAGMENTS), max_size=16)))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in itertools.pairwise(bounds)]


def _middleware(configs: list[dict[str, Any]]) -> list[Any]:
    built = []
    for config in configs:
        settings_ = {key: value for key, value in config.items() if key != "plugin"}
        built.extend(gr.load_plugin(config["plugin"]).build(settings_).middleware)
    return built


def _guarded(configs: list[dict[str, Any]], chunks: list[str]) -> gr.GuardedClient:
    return gr.Guard(canaries=CASES, middleware=_middleware(configs)).wrap(StreamClient(chunks))


def _invoke(guard: gr.GuardedClient) -> str | None:
    """invoke's answer, or None when it is blocked."""
    try:
        return str(guard.invoke("q").output)
    except gr.GuardrailViolation:
        return None


def _stream(guard: gr.GuardedClient) -> tuple[str, bool]:
    """(released text joined, whether the stream was blocked)."""
    released = []
    try:
        for item in guard.stream("q"):
            if isinstance(item, gr.StreamChunk):
                released.append(item.text)
    except gr.GuardrailViolation:
        return "".join(released), True
    return "".join(released), False


def _blocked_spans(configs: list[dict[str, Any]], text: str) -> list[tuple[int, int]]:
    """Where the whole-text check of block-only policies flags ``text``."""
    spans = []
    for config in configs:
        if config["plugin"] == "regex":
            patterns = [re.compile(rule["pattern"]) for rule in config["rules"]]
        else:
            words = "|".join(re.escape(w) for w in sorted(config["words"], key=len, reverse=True))
            body = f"(?<!\\w)(?:{words})(?!\\w)" if config["whole_words"] else words
            patterns = [re.compile(body, 0 if config["case_sensitive"] else re.IGNORECASE)]
        spans.extend(m.span() for p in patterns for m in p.finditer(text))
    return spans


FAST = settings(max_examples=250, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(configs=st.one_of(policies(), st.tuples(policies(), size_limits).map(
    lambda pair: [*pair[0], pair[1]])), chunks=chunked())
def test_the_streamed_verdict_and_text_are_invokes_for_any_chunking(
        configs: list[dict[str, Any]], chunks: list[str]) -> None:
    """Blocked exactly when invoke blocks; otherwise the released text joined is invoke's
    answer, whatever the chunk boundaries."""
    guard = _guarded(configs, chunks)
    expected = _invoke(guard)
    released, blocked = _stream(guard)
    assert blocked == (expected is None)
    if expected is not None:
        assert released == expected


@FAST
@given(configs=policies(block_only=True), chunks=chunked())
def test_no_released_character_lies_inside_a_blocked_span(
        configs: list[dict[str, Any]], chunks: list[str]) -> None:
    """What a blocked stream released is a prefix of the text ending before the first span
    the whole-text check blocks."""
    text = "".join(chunks)
    released, blocked = _stream(_guarded(configs, chunks))
    assert text.startswith(released)
    spans = _blocked_spans(configs, text)
    assert blocked == bool(spans)
    if spans:
        assert len(released) <= min(start for start, _ in spans)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs=policies(), chunks=chunked())
def test_astream_releases_what_stream_releases(configs: list[dict[str, Any]],
                                               chunks: list[str]) -> None:
    """The async twin obeys the same law."""
    guard = _guarded(configs, chunks)

    async def run() -> tuple[str, bool]:
        released = []
        try:
            async for item in guard.astream("q"):
                if isinstance(item, gr.StreamChunk):
                    released.append(item.text)
        except gr.GuardrailViolation:
            return "".join(released), True
        return "".join(released), False

    assert asyncio.run(run()) == _stream(guard)


def _released(guard: gr.GuardedClient) -> tuple[str, str, str, bool]:
    """(text, reasoning, tool call 0 arguments) released, and whether the stream was blocked."""
    parts: dict[str, list[str]] = {"text": [], "reasoning": [], "tool": []}
    try:
        for item in guard.stream("q"):
            if isinstance(item, gr.StreamChunk):
                parts["text"].append(item.text)
                parts["reasoning"].append(item.reasoning)
                parts["tool"].extend(d.arguments for d in item.tool_calls)
    except gr.GuardrailViolation:
        return *("".join(p) for p in parts.values()), True  # type: ignore[return-value]
    return *("".join(p) for p in parts.values()), False  # type: ignore[return-value]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs=policies(), chunks=chunked(), channel=st.sampled_from(["reasoning", "tool"]))
def test_reasoning_and_tool_arguments_obey_the_same_law_as_text(
        configs: list[dict[str, Any]], chunks: list[str], channel: str) -> None:
    """The same chunks sent as reasoning deltas or as one tool call's argument deltas are
    released (or blocked) exactly as the text channel releases them."""
    text, _, _, blocked = _released(_guarded(configs, chunks))

    def item(piece: str) -> gr.StreamChunk:
        if channel == "reasoning":
            return gr.StreamChunk(reasoning=piece)
        return gr.StreamChunk(tool_calls=(gr.ToolCallDelta(index=0, arguments=piece),))

    other = _guarded(configs, [item(piece) for piece in chunks])  # type: ignore[misc]
    _, reasoning, tool, other_blocked = _released(other)
    assert other_blocked == blocked
    if not blocked:
        assert (reasoning if channel == "reasoning" else tool) == text


class _Boom(Exception):
    """The client's own failure, mid-stream."""


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs=policies(), chunks=chunked(), data=st.data())
def test_a_client_failing_at_any_point_ends_the_stream_with_its_error_and_a_prefix(
        configs: list[dict[str, Any]], chunks: list[str], data: Any) -> None:
    """Wherever the client's stream fails, the caller gets that error, never a StreamEnd,
    and what was released is a prefix of what the whole stream would release."""
    whole, _ = _stream(_guarded(configs, chunks))
    fail_after = data.draw(st.integers(0, len(chunks)))
    client = StreamClient(chunks, fail_after=fail_after, error=_Boom())
    guard = gr.Guard(canaries=CASES, middleware=_middleware(configs)).wrap(client)
    released: list[str] = []
    try:
        for item in guard.stream("q"):
            assert isinstance(item, gr.StreamChunk), "a StreamEnd after a failure"
            released.append(item.text)
    except _Boom:
        pass
    except gr.GuardrailViolation:
        return  # a block decided before the failure point: the law above covers it
    assert whole.startswith("".join(released))
