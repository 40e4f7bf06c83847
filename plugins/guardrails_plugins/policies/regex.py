"""``regex``: named regular-expression rules that block or redact, per rule and direction.

Patterns use Python's ``re`` syntax and are searched anywhere in each
string of the input or output. The replacement is inserted literally
(``\\1`` is not a back-reference). Patterns come from the operator's
configuration and ``re`` has no time limit, so keep them free of nested
repetition such as ``(a+)+``. A pattern that matches the empty string is
refused, since redacting with it would insert the replacement everywhere.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

import guardrails as gr

from ._text import Action, ApplyTo, Direction, Hit, ScanPolicy


class RegexRule(BaseModel):
    """One rule of the ``regex`` plugin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    """Reported in findings and redaction counts (never the matched text)."""
    pattern: str
    action: Action = "block"
    replacement: str = "[REDACTED]"
    apply_to: ApplyTo = ("input", "output")
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
        if compiled.fullmatch(""):
            raise ValueError(f"pattern {pattern!r} matches the empty string; make it match at "
                             "least one character")
        return pattern


class RegexSettings(gr.RuntimePolicySettings):
    """Settings of the ``regex`` plugin."""

    rules: tuple[RegexRule, ...] = Field(min_length=1)
    """Applied in order; each rule sees the text as redacted by the rules before it."""

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[RegexRule, ...]) -> tuple[RegexRule, ...]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; give each a unique name")
            seen.add(rule.name)
        return rules


class RegexScanner:
    """The rules that apply to one direction, compiled once."""

    def __init__(self, rules: list[RegexRule]) -> None:
        self._rules = [(rule, re.compile(rule.pattern, re.IGNORECASE if rule.ignore_case else 0))
                       for rule in rules]

    def __call__(self, text: str) -> tuple[str, list[Hit]]:
        hits: list[Hit] = []
        for rule, pattern in self._rules:
            text, count = pattern.subn(lambda _m, r=rule: r.replacement, text)
            hits.extend(Hit(rule.name, rule.action) for _ in range(count))
        return text, hits


def _scanner(settings: RegexSettings, where: Direction) -> RegexScanner | None:
    rules = [rule for rule in settings.rules if where in rule.apply_to]
    return RegexScanner(rules) if rules else None


def build(settings: RegexSettings) -> gr.PluginParts:
    policy = ScanPolicy("regex", input=_scanner(settings, "input"),
                        output=_scanner(settings, "output"))
    return gr.PluginParts(middleware=[policy])


plugin = gr.Plugin(
    name="regex", settings=RegexSettings, factory=build, provides={"middleware"},
    description="Named regular-expression rules that block or redact inputs and outputs.")
