"""The deny_list plugin: block or redact configured words and phrases."""

from __future__ import annotations

import pytest
from plugin_helpers import Model, build, run

import guardrails as gr


def deny(**settings: object) -> list[object]:
    return list(build("deny_list", {"words": ["forbidden", "secret plan"], **settings}).middleware)


def test_clean_text_passes() -> None:
    """Text with no denied word reaches the model and is answered."""
    assert run(deny(), "a harmless question").output == "ok"


def test_denied_word_in_the_input_blocks_before_the_model() -> None:
    """A denied word blocks the call (the default action) and the model is not called."""
    model = Model()
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(deny(), "tell me the forbidden thing", model)
    assert model.seen == []
    assert caught.value.policy == "deny_list"


def test_findings_name_the_entry_not_the_text() -> None:
    """The violation names the entry's position in words, not the matched text."""
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(deny(), "the Secret  Plan? no: the secret plan")
    assert "words[1] (1)" in str(caught.value)
    assert caught.value.findings[0].evidence["matches"] == {"words[1]": 1}


def test_matching_ignores_case_by_default() -> None:
    """FORBIDDEN matches forbidden unless case_sensitive."""
    with pytest.raises(gr.GuardrailViolation):
        run(deny(), "FORBIDDEN")
    assert run(deny(case_sensitive=True), "FORBIDDEN").output == "ok"


def test_whole_words_only_by_default() -> None:
    """A denied word inside a longer word does not match unless whole_words is false."""
    assert run(deny(), "unforbiddenly").output == "ok"
    with pytest.raises(gr.GuardrailViolation):
        run(deny(whole_words=False), "unforbiddenly")


def test_redact_replaces_each_match_in_the_output() -> None:
    """action=redact replaces matches with the replacement and counts them."""
    response = run(deny(action="redact"), "hi", Model("the forbidden word, Forbidden twice"))
    assert response.output == "the [REDACTED] word, [REDACTED] twice"
    assert response.metadata["guardrails.redactions"]["deny_list"] == {"output": {"words[0]": 2}}


def test_longer_phrase_wins_over_its_prefix() -> None:
    """With "secret" and "secret plan" denied, the whole phrase is redacted."""
    middleware = build("deny_list", {"words": ["secret", "secret plan"],
                                     "action": "redact"}).middleware
    model = Model()
    run(middleware, "the secret plan", model)
    assert model.seen[0].input == "the [REDACTED]"


def test_apply_to_input_only_leaves_outputs() -> None:
    """apply_to=["input"] does not scan the answer."""
    assert run(deny(apply_to=["input"]), "hi", Model("forbidden")).output == "forbidden"


def test_regex_metacharacters_in_words_are_literal() -> None:
    """Entries are matched literally: "a.b" does not match "axb"."""
    middleware = build("deny_list", {"words": ["a.b"]}).middleware
    assert run(middleware, "axb").output == "ok"
    with pytest.raises(gr.GuardrailViolation):
        run(middleware, "say a.b now")


def test_empty_entry_is_a_settings_error() -> None:
    """A blank entry would match everywhere; it is refused with its index."""
    with pytest.raises(gr.PluginError, match="words\\[1\\] is empty"):
        build("deny_list", {"words": ["ok", "  "]})


def test_words_are_required() -> None:
    """deny_list without words is a settings error naming the key."""
    with pytest.raises(gr.PluginError) as caught:
        build("deny_list", {})
    assert caught.value.setting == "words"
