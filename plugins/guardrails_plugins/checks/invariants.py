"""``invariants``: declarative comparisons on JSON pointers that every candidate must satisfy.

Each rule reads the candidate state at ``pointer`` and compares it with
``value`` using ``op``. Nothing a user writes is evaluated as code. Values
compare as JSON: ``1`` equals ``1.0`` but not ``true``; ordering needs two
numbers or two strings. A pointer that resolves to nothing fails every rule
except ``exists`` with ``value = false``. Mismatched types fail (closed).

| op | passes when |
| --- | --- |
| ``==`` ``!=`` | the value equals / differs from ``value`` |
| ``<`` ``<=`` ``>`` ``>=`` | ordered comparison with ``value`` (number or string) |
| ``in`` ``not_in`` | the value is / is not an element of the list ``value`` |
| ``exists`` | the pointer resolves (``value`` true, the default) or does not (false) |
| ``type`` | the value has JSON type ``value``: string, number, integer, boolean, null, array, object |
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import guardrails as gr

from ._pointers import MISSING, check_pointer, resolve

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "exists", "type"]
_JSON_TYPES = frozenset(("string", "number", "integer", "boolean", "null", "array", "object"))
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), booleans only equal booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def json_type(value: Any) -> set[str]:
    """The JSON types ``value`` has (an integral number is both ``integer`` and ``number``)."""
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"integer", "number"} if math.isfinite(value) and value.is_integer() else {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list | tuple):
        return {"array"}
    if isinstance(value, dict):
        return {"object"}
    return set()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Rule(BaseModel):
    """One comparison of the ``invariants`` plugin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pointer: str
    """JSON Pointer into the candidate state, e.g. ``/params/temperature``."""
    op: Op
    value: Any = None
    """What to compare with; a list for ``in``/``not_in``, a type name for ``type``,
    a boolean for ``exists`` (default true)."""
    name: str = Field(default="", max_length=120)
    """Shown in findings; defaults to ``pointer op value``."""

    @field_validator("pointer")
    @classmethod
    def _pointer(cls, pointer: str) -> str:
        return check_pointer(pointer)

    @model_validator(mode="after")
    def _operand(self) -> Rule:
        given = "value" in self.model_fields_set
        value, op = self.value, self.op
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("value must be a finite number")
        if op == "exists":
            if given and not isinstance(value, bool):
                raise ValueError("'exists' takes value = true or false")
        elif not given:
            raise ValueError(f"op {op!r} needs a 'value'")
        elif op in _ORDER and not (_number(value) or isinstance(value, str)):
            raise ValueError(f"op {op!r} compares with a number or a string, got "
                             f"{type(value).__name__}")
        elif op in ("in", "not_in") and not isinstance(value, list | tuple):
            raise ValueError(f"op {op!r} needs a list as 'value'")
        elif op == "type" and value not in _JSON_TYPES:
            raise ValueError(f"op 'type' needs one of {', '.join(sorted(_JSON_TYPES))}, "
                             f"got {value!r}")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        shown = "true" if self.op == "exists" and "value" not in self.model_fields_set else \
            gr.canonical_json(self.value).decode()
        return f"{self.pointer} {self.op} {shown}"

    def holds(self, state: dict[str, Any]) -> tuple[bool, Any]:
        """Whether the rule holds in ``state``, and the value found at the pointer."""
        found = resolve(state, self.pointer)
        if self.op == "exists":
            return (found is not MISSING) == (self.value is not False), found
        if found is MISSING:
            return False, found
        if self.op == "==":
            return json_equal(found, self.value), found
        if self.op == "!=":
            return not json_equal(found, self.value), found
        if self.op in _ORDER:
            comparable = (_number(found) and _number(self.value)) or (
                isinstance(found, str) and isinstance(self.value, str))
            if not comparable or (isinstance(found, float) and math.isnan(found)):
                return False, found
            return _ORDER[self.op](found, self.value), found
        if self.op in ("in", "not_in"):
            member = any(json_equal(found, item) for item in self.value)
            return member == (self.op == "in"), found
        return self.value in json_type(found), found


class InvariantsSettings(gr.PluginSettings):
    """Settings of the ``invariants`` plugin."""

    rules: tuple[Rule, ...] = Field(min_length=1)


def _shown(value: Any) -> str:
    if value is MISSING:
        return "nothing (the pointer does not resolve)"
    try:
        text = gr.canonical_json(value).decode()
    except gr.ConfigError:
        text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


class Invariants:
    """The ``invariants`` update check: one finding per rule, over the candidate state."""

    name = "invariants"

    def __init__(self, settings: InvariantsSettings) -> None:
        self.settings = settings

    def __repr__(self) -> str:
        return f"Invariants({self.settings!r})"

    def __call__(self, context: gr.ReviewContext) -> Iterable[gr.Finding]:
        findings = []
        for index, rule in enumerate(self.settings.rules):
            ok, found = rule.holds(context.candidate_state)
            message = (f"invariant {rule.label!r} holds" if ok else
                       f"invariant {rule.label!r} fails: found {_shown(found)}")
            findings.append(gr.Finding(check=self.name, passed=ok, message=message,
                                       evidence={"rule": index, "pointer": rule.pointer,
                                                 "op": rule.op}))
        return findings


def build(settings: InvariantsSettings) -> gr.PluginParts:
    return gr.PluginParts(checks=[Invariants(settings)])


plugin = gr.Plugin(
    name="invariants", settings=InvariantsSettings, factory=build, provides={"checks"},
    description="Declarative comparisons on JSON pointers that every candidate state must satisfy.")
