"""``json_schema``: validate outputs against a JSON Schema; also a canary checker.

Needs the ``jsonschema`` package (``pip install 'guardrails-middleware[jsonschema]'``);
without it the plugin fails to build, naming the fix, so a guard that
configures it refuses to start. The schema's ``$schema`` picks the draft
(2020-12 when absent). ``$ref`` to remote documents is never fetched. A
text output is parsed as JSON first unless ``parse_json`` is false. A
violation names where in the output it failed and which schema keyword
failed, never the output's content. On a stream it needs the whole
response: the stream's text is held back to its end, then validated.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import PrivateAttr, field_validator, model_validator

import guardrails as gr

from ._text import violation

_INSTALL = "pip install 'guardrails-middleware[jsonschema]'"


def _validator_for(schema: dict[str, Any], *, formats: bool = False) -> Any:
    """A compiled validator; ``ConfigError`` when jsonschema is missing or the schema is bad."""
    try:
        import jsonschema
    except ImportError:
        raise gr.ConfigError(f"the json_schema plugin needs the jsonschema package: {_INSTALL}") \
            from None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        raise gr.ConfigError(f"the output schema is not a valid JSON Schema at '/{where}': "
                             f"{exc.message}") from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER if formats else None)


def _first_error(validator: Any, instance: Any) -> str | None:
    """Where and why ``instance`` fails, without quoting it; ``None`` when it passes."""
    import jsonschema.exceptions

    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    pointer = "".join(f"/{part}" for part in error.absolute_path) or "/"
    return f"at '{pointer}' (schema keyword {error.validator!r})"


class JsonSchemaSettings(gr.RuntimePolicySettings):
    """Settings of the ``json_schema`` plugin (give ``output_schema`` or ``output_schema_file``)."""

    output_schema: dict[str, Any] | None = None
    """The JSON Schema, inline."""
    output_schema_file: Path | None = None
    """A JSON file holding the schema, read once when the plugin is built."""
    parse_json: bool = True
    """Parse a text output as JSON before validating (a model answers in text)."""
    check_formats: bool = False
    """Also enforce ``format`` (``email``, ``date-time`` ...), which JSON Schema treats as advisory."""

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaSettings:
        if (self.output_schema is None) == (self.output_schema_file is None):
            raise ValueError("give exactly one of output_schema and output_schema_file")
        return self


def load_schema(settings: JsonSchemaSettings) -> dict[str, Any]:
    """The configured schema; ``ConfigError`` naming the file when it cannot be read."""
    if settings.output_schema is not None:
        return settings.output_schema
    path = settings.output_schema_file
    assert path is not None  # guaranteed by the settings validator
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise gr.ConfigError(f"output_schema_file {str(path)!r} cannot be read as JSON: {exc}") \
            from None
    if not isinstance(schema, dict):
        raise gr.ConfigError(f"output_schema_file {str(path)!r} holds a {type(schema).__name__}, "
                             "not a JSON Schema object")
    return schema


class JsonSchemaPolicy:
    """The ``json_schema`` middleware: the output must validate. Stateless."""

    name = "json_schema"

    def __init__(self, schema: dict[str, Any], *, parse_json: bool = True,
                 check_formats: bool = False) -> None:
        self._validator = _validator_for(schema, formats=check_formats)
        self.parse_json = parse_json
        self.schema = schema

    def __repr__(self) -> str:
        return f"JsonSchemaPolicy({gr.canonical_json(self.schema).decode()})"

    def _check(self, response: gr.Response) -> gr.Response:
        output = response.output
        if self.parse_json and isinstance(output, str):
            try:
                output = json.loads(output)
            except ValueError:
                raise violation(self.name, "the output is not JSON, so it cannot match the "
                                "output schema", where="output") from None
        problem = _first_error(self._validator, output)
        if problem is not None:
            raise violation(self.name, f"the output does not match the JSON schema {problem}",
                            where="output")
        return response

    def __call__(self, request: gr.Request,
                 call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
        return self._check(call_next(request))

    async def acall(self, request: gr.Request,
                    call_next: Callable[[gr.Request], Awaitable[gr.Response]]) -> gr.Response:
        return self._check(await call_next(request))

    def streaming(self) -> gr.StreamPolicy:
        """The stream side: the whole text, validated when the stream ends."""
        return gr.StreamPolicy(self.name, checks=(_WholeSchema(self),))


class _WholeSchema:
    """The schema check on a stream's complete text (the answer channel only)."""

    max_span = None
    channels = frozenset({"text"})

    def __init__(self, policy: JsonSchemaPolicy) -> None:
        self.policy = policy

    def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
        self.policy._check(gr.Response(output=text, version=""))  # raises when it fails
        return []


class MatchesJsonSchema(gr.Checker):
    """Canary checker: passes when the output (text parsed as JSON) validates against ``value``.

    In a case file: ``"expect": {"json_schema": {...schema...}}``.
    """

    name: ClassVar[str] = "json_schema"
    value: dict[str, Any]
    _validator: Any = PrivateAttr(default=None)

    @field_validator("value")
    @classmethod
    def _is_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        _validator_for(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._validator = _validator_for(self.value)

    def __call__(self, output: Any) -> bool:
        if isinstance(output, str):
            try:
                output = json.loads(output)
            except ValueError:
                return False
        return _first_error(self._validator, output) is None


def build(settings: JsonSchemaSettings) -> gr.PluginParts:
    policy = JsonSchemaPolicy(load_schema(settings), parse_json=settings.parse_json,
                              check_formats=settings.check_formats)
    return gr.PluginParts(middleware=[policy], checkers={MatchesJsonSchema.name: MatchesJsonSchema})


plugin = gr.Plugin(
    name="json_schema", settings=JsonSchemaSettings, factory=build,
    provides={"middleware", "checkers"},
    description="Validate outputs against a JSON Schema; adds the json_schema canary checker.")
