"""The json_schema plugin: outputs validated against a JSON Schema, and its canary checker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from guardrails_plugins.policies.json_schema import MatchesJsonSchema
from plugin_helpers import Model, arun, build, run

import guardrails as gr

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"},
                   "items": {"type": "array", "items": {"type": "number"}}},
    "required": ["answer"],
    "additionalProperties": False,
}


def schema(**settings: object) -> list[object]:
    return list(build("json_schema", {"output_schema": SCHEMA, **settings}).middleware)


def test_valid_json_text_passes() -> None:
    """A text output that parses and validates is returned unchanged."""
    text = '{"answer": "Paris", "items": [1, 2.5]}'
    assert run(schema(), "q", Model(text)).output == text


def test_invalid_output_names_the_place_and_keyword_not_the_content() -> None:
    """A violation says where and which keyword failed, never the output itself."""
    with pytest.raises(gr.GuardrailViolation) as caught:
        run(schema(), "q", Model('{"answer": "Paris", "items": [1, "secret-value"]}'))
    message = str(caught.value)
    assert "at '/items/1' (schema keyword 'type')" in message
    assert "secret-value" not in message


def test_missing_required_field_is_blocked() -> None:
    """An object without a required property is refused."""
    with pytest.raises(gr.GuardrailViolation, match="keyword 'required'"):
        run(schema(), "q", Model("{}"))


def test_text_that_is_not_json_is_blocked() -> None:
    """A text output that does not parse cannot match, so it is refused."""
    with pytest.raises(gr.GuardrailViolation, match="not JSON"):
        run(schema(), "q", Model("Paris"))


def test_structured_output_is_validated_as_is() -> None:
    """A dict output is validated directly."""
    assert run(schema(), "q", Model({"answer": "Paris"})).output == {"answer": "Paris"}


def test_parse_json_false_validates_text_as_a_string() -> None:
    """With parse_json=false a text output is a JSON string, so an object schema refuses it."""
    with pytest.raises(gr.GuardrailViolation, match="keyword 'type'"):
        run(schema(parse_json=False), "q", Model('{"answer": "x"}'))


def test_formats_are_enforced_only_when_asked() -> None:
    """check_formats turns on format validation (advisory by default in JSON Schema)."""
    dated = {"type": "string", "format": "date"}
    assert run(build("json_schema", {"output_schema": dated}).middleware, "q",
               Model('"not a date"')).output == '"not a date"'
    with pytest.raises(gr.GuardrailViolation, match="keyword 'format'"):
        run(build("json_schema", {"output_schema": dated, "check_formats": True}).middleware,
            "q", Model('"not a date"'))


def test_schema_may_come_from_a_file(tmp_path: Path) -> None:
    """output_schema_file is read once at build."""
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    middleware = build("json_schema", {"output_schema_file": str(path)}).middleware
    with pytest.raises(gr.GuardrailViolation):
        run(middleware, "q", Model("{}"))


def test_unreadable_schema_file_stops_the_build(tmp_path: Path) -> None:
    """A missing schema file is a PluginError naming the plugin and the file."""
    with pytest.raises(gr.PluginError, match="plugin 'json_schema': output_schema_file"):
        build("json_schema", {"output_schema_file": str(tmp_path / "missing.json")})


def test_invalid_schema_stops_the_build() -> None:
    """A schema that is not a valid JSON Schema is refused when the plugin is built."""
    with pytest.raises(gr.PluginError, match="not a valid JSON Schema"):
        build("json_schema", {"output_schema": {"type": "no-such-type"}})


def test_exactly_one_schema_source() -> None:
    """Giving neither or both of output_schema and output_schema_file is a settings error."""
    with pytest.raises(gr.PluginError, match="exactly one of"):
        build("json_schema", {})


def test_input_is_not_checked() -> None:
    """The schema applies to outputs only; any input reaches the model."""
    model = Model('{"answer": "x"}')
    run(schema(), "free text input", model)
    assert model.seen[0].input == "free text input"


def test_async_chain_validates_too() -> None:
    """acall refuses the same invalid output."""
    with pytest.raises(gr.GuardrailViolation):
        arun(schema(), "q", Model("{}"))


def test_plugin_contributes_a_canary_checker() -> None:
    """Building the plugin also yields the json_schema canary checker."""
    assert build("json_schema", {"output_schema": SCHEMA}).checkers == {
        "json_schema": MatchesJsonSchema}


def test_canary_checker_passes_and_fails_outputs() -> None:
    """The checker passes a matching output and fails a mismatching or non-JSON one."""
    checker = MatchesJsonSchema(value=SCHEMA)
    assert checker('{"answer": "x"}') is True
    assert checker('{"items": []}') is False
    assert checker("not json") is False


def test_canary_checker_refuses_an_invalid_schema() -> None:
    """The checker validates its schema at construction."""
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        MatchesJsonSchema(value={"type": 12})
