"""The regex plugin: named rules that block or redact, per rule and direction."""

from __future__ import annotations

import pytest
from plugin_helpers import Model, build, run

import guardrails as gr

TICKET = {"name": "ticket", "pattern": r"TICKET-\d+", "action": "redact",
          "replacement": "[TICKET]"}
KEY = {"name": "api_key", "pattern": r"sk-[A-Za-z0-9]{8,}", "action": "block"}


def rules(*items: dict[str, object]) -> list[object]:
    return list(build("regex", {"rules": list(items)}).middleware)


def test_text_matching_no_rule_passes() -> None:
    """No match: the call goes through unchanged."""
    model = Model()
    run(rules(TICKET, KEY), "nothing to see", model)
    assert model.seen[0].input == "nothing to see"


def test_block_rule_refuses_the_call_naming_the_rule() -> None:
    """A match of a block rule raises a violation naming the rule, not the text."""
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(rules(TICKET, KEY), "my key is sk-abcdef123456")
    assert "api_key (1)" in str(caught.value)
    assert "sk-abc" not in str(caught.value)


def test_redact_rule_replaces_matches() -> None:
    """A redact rule replaces every match with its replacement."""
    model = Model()
    run(rules(TICKET), "see TICKET-12 and TICKET-345", model)
    assert model.seen[0].input == "see [TICKET] and [TICKET]"


def test_replacement_is_literal() -> None:
    """Backslashes in the replacement are inserted as written, not as group references."""
    model = Model()
    run(rules({**TICKET, "pattern": r"(TICKET)-\d+", "replacement": r"\1"}), "TICKET-1", model)
    assert model.seen[0].input == r"\1"


def test_rule_applies_only_to_its_direction() -> None:
    """A rule with apply_to=["output"] ignores the input and redacts the output."""
    middleware = rules({**TICKET, "apply_to": ["output"]})
    model = Model("closed TICKET-9")
    response = run(middleware, "TICKET-1", model)
    assert model.seen[0].input == "TICKET-1"
    assert response.output == "closed [TICKET]"


def test_ignore_case() -> None:
    """ignore_case makes a rule match regardless of case."""
    model = Model()
    run(rules({**TICKET, "ignore_case": True}), "ticket-7", model)
    assert model.seen[0].input == "[TICKET]"


def test_rules_apply_in_order() -> None:
    """Each rule sees the text as redacted by the rules before it."""
    first = {"name": "digits", "pattern": r"\d+", "action": "redact", "replacement": "N"}
    model = Model()
    run(rules(first, TICKET), "TICKET-12", model)
    assert model.seen[0].input == "TICKET-N"


def test_pattern_that_does_not_compile_is_a_settings_error() -> None:
    """A bad pattern names the rule's path and the compile error."""
    with pytest.raises(gr.PluginError) as caught:
        build("regex", {"rules": [{"name": "bad", "pattern": "(unclosed"}]})
    assert caught.value.setting == "rules[0].pattern"
    assert "does not compile" in str(caught.value)


def test_pattern_matching_the_empty_string_is_refused() -> None:
    """A pattern that can match nothing would redact everywhere; it is refused."""
    with pytest.raises(gr.PluginError, match="matches the empty string"):
        build("regex", {"rules": [{"name": "star", "pattern": "a*"}]})


def test_rule_names_must_be_unique() -> None:
    """Two rules with one name are refused."""
    with pytest.raises(gr.PluginError, match="two rules are named 'ticket'"):
        build("regex", {"rules": [TICKET, TICKET]})
