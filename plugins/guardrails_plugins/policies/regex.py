"""``regex``: named regular-expression rules that block or redact, per rule and direction.

Patterns use Python's ``re`` syntax and are searched anywhere in each
string of the input or output. The replacement is inserted literally
(``\\1`` is not a back-reference). Patterns come from the operator's
configuration and ``re`` has no time limit, so keep them free of nested
repetition such as ``(a+)+``. A pattern that matches the empty string is
refused, since redacting with it would insert the replacement everywhere.

On a stream, each rule holds back as many characters as its longest match
can depend on (``guardrails.regex_span``). A rule whose matches are unbounded
(``.*``, ``+``) holds back the whole response, unless ``stream_window`` bounds
it; such a windowed rule must ``block`` (a redaction could cut a match short
of what ``invoke`` would replace, so ``redact`` with a window is refused).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import guardrails as gr

from ._text import Action, ApplyTo, Direction, Hit, PatternCheck, ScanPolicy


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
    stream_window: int | None = Field(default=None, ge=1, le=1_048_576)
    """On a stream, the characters to hold back for a pattern whose matches are unbounded
    (ignored when the pattern's width is known); without it such a rule buffers the
    whole response."""

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

    @model_validator(mode="after")
    def _window_blocks(self) -> RegexRule:
        if (self.stream_window is not None and self.action == "redact"
                and gr.regex_span(self.pattern) is None):
            raise ValueError(
                f"rule {self.name!r}: a stream_window on a pattern with unbounded matches "
                "cannot redact on a stream (a match may be longer than the window, and text "
                "already released cannot be redacted); use action = 'block', or drop "
                "stream_window to buffer the whole response")
        return self


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

    def stream_checks(self) -> list[PatternCheck]:
        """One stream check per rule, in order (each sees what the rules before it left)."""
        return [PatternCheck(pattern, rule.action, rule.replacement, rule.name,
                             rule.stream_window) for rule, pattern in self._rules]

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
