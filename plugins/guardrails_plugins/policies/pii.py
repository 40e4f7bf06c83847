"""``pii``: redact or block e-mail addresses, phone numbers, card numbers and IBANs.

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check,
so random digit strings are left alone. Phone numbers are a heuristic: 9 to
15 digits (E.164 allows at most 15), optionally with ``+country`` and an
``(area)`` code, in groups separated by spaces, hyphens or dots; dotted
decimals and IPv4 addresses are not phones. Detectors run in the order
IBAN, card, e-mail, phone on text already redacted by the previous ones, so
one number is never counted twice. Matched text never appears in a message,
a finding or a log: only the kind and the count.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

import guardrails as gr

from ._text import ALL_CHANNELS, Action, ApplyTo, Hit, ScanPolicy, replace_spans

Kind = Literal["email", "phone", "credit_card", "iban"]
ALL_KINDS: tuple[Kind, ...] = ("email", "phone", "credit_card", "iban")

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}"
                    r"(?![A-Za-z0-9-])")
_DIGIT_RUN = re.compile(r"(?<!\w)\d+(?:[ -]\d+)*")
_DIGITS = re.compile(r"\d+")
# Bounded token and group counts keep each search linear in the text length.
_IBAN_RUN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}[A-Za-z0-9]{0,30}(?: [A-Za-z0-9]{1,34}){0,12}")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d+(?:[ .-]\d+)*(?!\w)")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn (mod 10) check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """Whether ``text`` (spaces ignored, any case) is an IBAN with a valid mod-97 check."""
    compact = text.replace(" ", "").upper()
    if not (15 <= len(compact) <= 34 and compact[:2].isalpha() and compact[2:4].isdigit()
            and compact.isalnum() and compact.isascii()):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def find_credit_cards(text: str) -> list[tuple[int, int]]:
    """Spans of 13-19 digit card numbers (single spaces or hyphens allowed) passing Luhn.

    Within a run of digit groups the longest valid window of whole groups
    wins, so a card followed by another number is still found.
    """
    spans: list[tuple[int, int]] = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start(), m.group())
                  for m in _DIGITS.finditer(run.group())]
        i = 0
        while i < len(groups):
            best, total, digits = None, 0, ""
            for j in range(i, len(groups)):
                digits += groups[j][2]
                total = len(digits)
                if total > 19:
                    break
                if total >= 13 and luhn_valid(digits):
                    best = j
            if best is None:
                i += 1
                continue
            spans.append((groups[i][0], groups[best][1]))
            i = best + 1
    return spans


def find_ibans(text: str) -> list[tuple[int, int]]:
    """Spans of IBANs, compact or printed in space-separated groups, passing mod-97."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while (match := _IBAN_RUN.search(text, pos)) is not None:
        groups = match.group().split(" ")
        found = None
        for k in range(len(groups), 0, -1):
            candidate = " ".join(groups[:k])
            end = match.start() + len(candidate)
            if (iban_valid(candidate) and (end == len(text) or not text[end].isalnum())):
                found = end
                break
        if found is not None:
            spans.append((match.start(), found))
            pos = found
        else:
            pos = match.start() + len(groups[0])
    return spans


def find_emails(text: str) -> list[tuple[int, int]]:
    """Spans of e-mail addresses (``local@domain.tld``)."""
    return [m.span() for m in _EMAIL.finditer(text)]


def _looks_like_phone(candidate: str) -> bool:
    digits = sum(char.isdigit() for char in candidate)
    if not 9 <= digits <= 15:
        return False
    # One dot is a decimal number; four dotted short groups an IPv4 address.
    return "." not in candidate or (candidate.count(".") >= 2
                                    and _IPV4.fullmatch(candidate) is None)


def find_phones(text: str) -> list[tuple[int, int]]:
    """Spans of likely phone numbers (see the module docstring for the heuristic)."""
    return [m.span() for m in _PHONE.finditer(text) if _looks_like_phone(m.group())]


_FINDERS = {"iban": find_ibans, "credit_card": find_credit_cards, "email": find_emails,
            "phone": find_phones}
_ORDER: tuple[Kind, ...] = ("iban", "credit_card", "email", "phone")


class PiiSettings(gr.RuntimePolicySettings):
    """Settings of the ``pii`` plugin."""

    action: Action = "redact"
    """``redact`` replaces each match by the placeholder; ``block`` refuses the call."""
    kinds: tuple[Kind, ...] = Field(default=ALL_KINDS, min_length=1)
    """Which kinds to detect: ``email``, ``phone``, ``credit_card``, ``iban``."""
    apply_to: ApplyTo = ("input", "output")
    """Scan the request input, the response output, or both."""
    placeholder: str = "[{kind}]"
    """Replacement text; ``{kind}`` becomes the upper-case kind (``[EMAIL]``)."""

    @field_validator("placeholder")
    @classmethod
    def _only_kind_field(cls, value: str) -> str:
        # Substituted with str.replace, never str.format: a user string is not a template language.
        if "{" in value.replace("{kind}", "") or "}" in value.replace("{kind}", ""):
            raise ValueError("the placeholder may contain '{kind}' and no other braces")
        return value


class PiiScanner:
    """Scanner for the configured kinds (see ``guardrails_plugins.policies._text``)."""

    def __init__(self, settings: PiiSettings) -> None:
        self.kinds = tuple(kind for kind in _ORDER if kind in settings.kinds)
        self.action = settings.action
        self.placeholder = settings.placeholder

    def stream_checks(self) -> list[KindCheck]:
        """One whole-response check per kind, in the order ``__call__`` applies them, so a
        stream is redacted, and its redactions counted, exactly as ``invoke``'s answer."""
        return [KindCheck(kind, self.action, self.placeholder.replace("{kind}", kind.upper()))
                for kind in self.kinds]

    def __call__(self, text: str) -> tuple[str, list[Hit]]:
        hits: list[Hit] = []
        for kind in self.kinds:
            spans = _FINDERS[kind](text)
            if spans:
                text = replace_spans(text, spans, self.placeholder.replace("{kind}", kind.upper()))
                hits.extend(Hit(kind, self.action) for _ in spans)
        return text, hits


class KindCheck:
    """One kind as a stream check: its detector validates whole values, so it sees the whole
    response (``max_span = None``); each value found is a hit labelled by the kind."""

    max_span = None
    channels = ALL_CHANNELS

    def __init__(self, kind: str, action: Action, replacement: str) -> None:
        self.kind, self.replacement = kind, None if action == "block" else replacement

    def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
        return [gr.StreamHit(start, end, self.replacement, self.kind)
                for start, end in sorted(_FINDERS[self.kind](text)) if start >= pos]


def build(settings: PiiSettings) -> gr.PluginParts:
    scanner = PiiScanner(settings)
    policy = ScanPolicy("pii", input=scanner if "input" in settings.apply_to else None,
                        output=scanner if "output" in settings.apply_to else None)
    return gr.PluginParts(middleware=[policy])


plugin = gr.Plugin(
    name="pii", settings=PiiSettings, factory=build, provides={"middleware"},
    description="Redact or block e-mail addresses, phone numbers, card numbers (Luhn) and "
                "IBANs (mod 97) in inputs and outputs.")
