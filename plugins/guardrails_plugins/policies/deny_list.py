"""``deny_list``: block or redact configured words and phrases.

Matching is case-insensitive unless ``case_sensitive``, and by whole words
unless ``whole_words`` is false (a phrase then also matches inside longer
words). Longer entries win over shorter ones that start the same way. The
matched text is never reported; findings name the entry's position in
``words`` (``words[3]``). A deny-list is a blunt tool: it does not see
through spacing, spelling or encoding tricks. On a stream it holds back the longest
entry's length plus a few characters of word boundary.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

import guardrails as gr

from ._text import Action, ApplyTo, Hit, PatternCheck, ScanPolicy


class DenyListSettings(gr.RuntimePolicySettings):
    """Settings of the ``deny_list`` plugin."""

    words: tuple[str, ...] = Field(min_length=1)
    """The words and phrases to deny (at least one; none empty)."""
    action: Action = "block"
    """``block`` refuses the call; ``redact`` replaces each match by ``replacement``."""
    apply_to: ApplyTo = ("input", "output")
    """Scan the request input, the response output, or both."""
    case_sensitive: bool = False
    whole_words: bool = True
    """Match only where the entry is not part of a longer word."""
    replacement: str = "[REDACTED]"
    """Inserted literally in place of each match when redacting."""

    @field_validator("words")
    @classmethod
    def _no_blank(cls, words: tuple[str, ...]) -> tuple[str, ...]:
        for index, word in enumerate(words):
            if not word.strip():
                raise ValueError(f"words[{index}] is empty; remove it")
        return words


class DenyListScanner:
    """One compiled alternation of every entry."""

    def __init__(self, settings: DenyListSettings) -> None:
        self.action = settings.action
        self.replacement = settings.replacement
        self.case_sensitive = settings.case_sensitive
        self._index = {self._key(word): index for index, word in enumerate(settings.words)}
        alternatives = "|".join(re.escape(word) for word in sorted(settings.words, key=len,
                                                                   reverse=True))
        pattern = f"(?<!\\w)(?:{alternatives})(?!\\w)" if settings.whole_words else alternatives
        self._pattern = re.compile(pattern, 0 if settings.case_sensitive else re.IGNORECASE)

    def _key(self, word: str) -> str:
        return word if self.case_sensitive else word.casefold()

    def _label(self, match: re.Match[str]) -> str:
        index = self._index.get(self._key(match.group()))
        return "denied phrase" if index is None else f"words[{index}]"

    def stream_checks(self) -> list[PatternCheck]:
        """On a stream: hold back the longest entry plus the word boundaries around it."""
        return [PatternCheck(self._pattern, self.action, self.replacement, self._label)]

    def __call__(self, text: str) -> tuple[str, list[Hit]]:
        hits: list[Hit] = []

        def replace(match: re.Match[str]) -> str:
            hits.append(Hit(self._label(match), self.action))
            return self.replacement

        return self._pattern.sub(replace, text), hits


def build(settings: DenyListSettings) -> gr.PluginParts:
    scanner = DenyListScanner(settings)
    policy = ScanPolicy("deny_list", input=scanner if "input" in settings.apply_to else None,
                        output=scanner if "output" in settings.apply_to else None)
    return gr.PluginParts(middleware=[policy])


plugin = gr.Plugin(
    name="deny_list", settings=DenyListSettings, factory=build, provides={"middleware"},
    description="Block or redact configured words and phrases in inputs and outputs.")
