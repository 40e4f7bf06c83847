"""The invariants plugin: declarative comparisons on JSON pointers, never eval."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from guardrails_plugins.checks.invariants import json_equal
from plugin_helpers import check, failed, review_context

import guardrails as gr
from guardrails.testing import DictClient

STATE = {"params": {"temperature": 0.7, "top_k": 40}, "model": "small", "tools": ["search"],
         "system_prompt": "Be careful.", "flag": True, "nothing": None}


def verdicts(*rules: dict[str, Any], state: dict[str, Any] | None = None) -> list[bool]:
    findings = check("invariants", {"rules": list(rules)})(review_context(state or STATE))
    return [finding.passed for finding in findings]


@pytest.mark.parametrize(("rule", "holds"), [
    ({"pointer": "/params/temperature", "op": "<=", "value": 1.0}, True),
    ({"pointer": "/params/temperature", "op": "<=", "value": 0.5}, False),
    ({"pointer": "/params/temperature", "op": "<", "value": 0.7}, False),
    ({"pointer": "/params/top_k", "op": ">", "value": 10}, True),
    ({"pointer": "/params/top_k", "op": ">=", "value": 41}, False),
    ({"pointer": "/model", "op": "==", "value": "small"}, True),
    ({"pointer": "/model", "op": "==", "value": "large"}, False),
    ({"pointer": "/model", "op": "!=", "value": "large"}, True),
    ({"pointer": "/model", "op": "!=", "value": "small"}, False),
    ({"pointer": "/model", "op": "in", "value": ["small", "medium"]}, True),
    ({"pointer": "/model", "op": "in", "value": ["large"]}, False),
    ({"pointer": "/model", "op": "not_in", "value": ["large"]}, True),
    ({"pointer": "/model", "op": "not_in", "value": ["small"]}, False),
    ({"pointer": "/tools", "op": "exists"}, True),
    ({"pointer": "/memory", "op": "exists"}, False),
    ({"pointer": "/memory", "op": "exists", "value": False}, True),
    ({"pointer": "/tools", "op": "exists", "value": False}, False),
    ({"pointer": "/tools", "op": "type", "value": "array"}, True),
    ({"pointer": "/flag", "op": "type", "value": "boolean"}, True),
    ({"pointer": "/flag", "op": "type", "value": "integer"}, False),
    ({"pointer": "/params/top_k", "op": "type", "value": "number"}, True),
    ({"pointer": "/params/temperature", "op": "type", "value": "integer"}, False),
    ({"pointer": "/nothing", "op": "type", "value": "null"}, True),
    ({"pointer": "/system_prompt", "op": ">=", "value": "A"}, True),
])
def test_each_operator_accepts_and_rejects(rule: dict[str, Any], holds: bool) -> None:
    """Every operator holds or fails as its table in the docs says."""
    assert verdicts(rule) == [holds]


def test_missing_pointer_fails_a_comparison() -> None:
    """A pointer that resolves to nothing fails (closed), and the message says so."""
    findings = check("invariants", {"rules": [{"pointer": "/params/top_p", "op": "<=",
                                               "value": 1}]})(review_context(STATE))
    assert "does not resolve" in findings[0].message


def test_ordering_across_types_fails_closed() -> None:
    """Comparing a string with a number fails rather than raising or guessing."""
    assert verdicts({"pointer": "/model", "op": "<", "value": 3}) == [False]


def test_booleans_are_not_numbers() -> None:
    """true is not == 1, and is not ordered against numbers."""
    assert verdicts({"pointer": "/flag", "op": "==", "value": 1}) == [False]
    assert verdicts({"pointer": "/flag", "op": ">=", "value": 0}) == [False]


def test_integers_equal_equivalent_floats() -> None:
    """JSON numbers compare by value: 40 == 40.0."""
    assert verdicts({"pointer": "/params/top_k", "op": "==", "value": 40.0}) == [True]
    assert json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})


def test_user_strings_are_never_evaluated() -> None:
    """A value that looks like code is compared as a plain string."""
    code = "__import__('os').system('echo pwned')"
    assert verdicts({"pointer": "/model", "op": "==", "value": code}) == [False]
    assert verdicts({"pointer": "/model", "op": "==", "value": code},
                    state={**STATE, "model": code}) == [True]


def test_findings_name_each_rule() -> None:
    """A finding per rule, named by its label (or its pointer, op and value)."""
    findings = check("invariants", {"rules": [
        {"pointer": "/params/temperature", "op": "<=", "value": 0.5, "name": "cool"},
        {"pointer": "/model", "op": "==", "value": "small"}]})(review_context(STATE))
    assert findings[0].message == "invariant 'cool' fails: found 0.7"
    assert findings[1].message == "invariant '/model == \"small\"' holds"


@pytest.mark.parametrize(("rule", "message"), [
    ({"pointer": "/a", "op": "<="}, "op '<=' needs a 'value'"),
    ({"pointer": "/a", "op": "in", "value": 3}, "needs a list"),
    ({"pointer": "/a", "op": "type", "value": "float"}, "op 'type' needs one of"),
    ({"pointer": "/a", "op": "<", "value": [1]}, "compares with a number or a string"),
    ({"pointer": "/a", "op": "exists", "value": "yes"}, "'exists' takes value = true or false"),
    ({"pointer": "a", "op": "exists"}, "is not a JSON Pointer"),
    ({"pointer": "/a", "op": "=~", "value": "x"}, "Input should be"),
    ({"pointer": "/a", "op": "<", "value": float("nan")}, "finite"),
])
def test_malformed_rules_are_settings_errors(rule: dict[str, Any], message: str) -> None:
    """Each malformed rule is refused when the plugin is built, with its path."""
    with pytest.raises(gr.PluginError, match="rules\\[0\\]") as caught:
        check("invariants", {"rules": [rule]})
    assert message in str(caught.value)


def test_guard_rejects_a_candidate_breaking_an_invariant(
        make_guard: Callable[..., gr.Guard], client: DictClient) -> None:
    """Through a real guard: a temperature above the rule is rejected, one within is accepted."""
    checks = gr.load_plugin("invariants").build({"rules": [
        {"pointer": "/params/temperature", "op": "<=", "value": 1.0}]}).checks
    guarded = make_guard(checks=checks).wrap(client)
    hot = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/params/temperature", "value": 1.5}]))
    assert not hot.accepted
    assert hot.deciding_finding is not None and hot.deciding_finding.check == "invariants"
    warm = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/params/temperature", "value": 0.9}]))
    assert warm.accepted


def test_every_rule_is_reported_even_after_a_failure() -> None:
    """All rules are evaluated, so one review shows every broken invariant."""
    findings = check("invariants", {"rules": [
        {"pointer": "/model", "op": "==", "value": "large"},
        {"pointer": "/params/top_k", "op": "<", "value": 10}]})(review_context(STATE))
    assert len(failed(findings)) == 2
