"""Tests of the example plugin, as its author would write them (run after installing it)."""

from __future__ import annotations

import pytest

import guardrails as gr
from guardrails.testing import DictClient

STATE = {"system_prompt": "Be brief.", "answers": {"long": "one two three four five"},
         "default": "ok"}
CASES = [gr.CanaryCase(id="short", input="anything", expect="ok")]


def guarded(settings: dict[str, object]) -> gr.GuardedClient:
    parts = gr.load_plugin("word_limit").build(settings)
    guard = gr.Guard(canaries=CASES, middleware=parts.middleware, checks=parts.checks)
    return guard.wrap(DictClient(STATE))


def test_discovered_through_the_entry_point() -> None:
    """The installed plugin is listed and loads."""
    assert gr.installed_plugins()["word_limit"].loaded


def test_short_answers_pass() -> None:
    """An answer within the limit is served."""
    assert guarded({"max_output_words": 3}).invoke("hello").output == "ok"


def test_long_answers_are_blocked() -> None:
    """An answer over the limit raises a violation naming the plugin."""
    with pytest.raises(gr.GuardrailViolation) as caught:
        guarded({"max_output_words": 3}).invoke("long")
    assert caught.value.policy == "word_limit"


def test_prompt_growth_is_rejected() -> None:
    """A proposal making the prompt longer than the limit is rejected."""
    client = guarded({"max_prompt_words": 3})
    decision = client.propose(gr.UpdateProposal(parent=client.version, patch=[
        {"op": "replace", "path": "/system_prompt", "value": "Be brief, be kind, be right."}]))
    assert not decision.accepted


def test_settings_typos_are_caught() -> None:
    """An unknown setting is refused with a suggestion."""
    with pytest.raises(gr.PluginError, match="did you mean 'max_output_words'"):
        gr.load_plugin("word_limit").build({"max_output_word": 3})
