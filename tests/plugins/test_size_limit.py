"""The size_limit plugin: input and output character limits."""

from __future__ import annotations

import pytest
from guardrails_plugins.policies.size_limit import size_of
from plugin_helpers import Model, arun, build, run

import guardrails as gr


def limit(**settings: object) -> list[object]:
    return list(build("size_limit", dict(settings)).middleware)


def test_input_at_the_limit_passes() -> None:
    """An input of exactly max_input_chars characters is allowed."""
    assert run(limit(max_input_chars=5), "abcde").output == "ok"


def test_input_over_the_limit_never_reaches_the_model() -> None:
    """One character over the limit blocks before the model is called."""
    model = Model()
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(limit(max_input_chars=5), "abcdef", model)
    assert model.seen == []
    assert caught.value.findings[0].evidence == {"where": "input", "chars": 6, "limit": 5}


def test_output_over_the_limit_is_withheld() -> None:
    """An over-long answer is blocked after the model ran."""
    with pytest.raises(gr.GuardrailViolation, match="the output has 11 characters"):
        run(limit(max_output_chars=10), "hi", Model("x" * 11))


def test_output_within_the_limit_passes() -> None:
    """An answer within max_output_chars is returned."""
    assert run(limit(max_output_chars=10), "hi", Model("short")).output == "short"


def test_structured_values_count_every_string() -> None:
    """Messages count the characters of every string, keys included."""
    assert size_of([{"role": "user", "content": "hello"}]) == len("role") + len("user") + len(
        "content") + len("hello")


def test_characters_are_code_points() -> None:
    """Size is counted in characters, not bytes."""
    assert run(limit(max_input_chars=3), "日本語").output == "ok"


def test_a_limit_is_required() -> None:
    """Settings without any limit are refused."""
    with pytest.raises(gr.PluginError, match="set max_input_chars, max_output_chars or both"):
        build("size_limit", {})


def test_limits_must_be_positive() -> None:
    """A zero limit is a settings error naming the key."""
    with pytest.raises(gr.PluginError) as caught:
        build("size_limit", {"max_output_chars": 0})
    assert caught.value.setting == "max_output_chars"


def test_async_chain_enforces_the_limit() -> None:
    """acall blocks the same over-long input."""
    with pytest.raises(gr.GuardrailViolation):
        arun(limit(max_input_chars=2), "abc")
