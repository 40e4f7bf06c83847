"""What the text policies (pii, deny_list, regex) share: walking strings and scanning them.

A *scanner* maps one string to its redacted form and the hits found in it.
``ScanPolicy`` runs scanners over the request input and/or the response
output: any hit whose action is ``block`` refuses the call; ``redact`` hits
are replaced in place and counted in the response metadata under
``guardrails.redactions``.

On a stream (``ScanPolicy.streaming``) a scanner that offers
``stream_checks()`` (regex, deny_list) is checked with a hold-back window;
any other scanner checks the whole response at the end of the stream (pii
offers one whole-response check per kind). The redaction counts reach the
stream's ``StreamEnd.metadata`` under ``guardrails.redactions``, as on
``invoke`` (input counts through ``gr.StreamInput``, output counts from the
buffer, by the label of each replacement).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field

import guardrails as gr

Direction = Literal["input", "output"]
Action = Literal["block", "redact"]
ApplyTo = Annotated[tuple[Direction, ...], Field(min_length=1)]
"""Which side of the call a policy inspects: the request input, the response output, or both."""

REDACTIONS_KEY = "guardrails.redactions"
"""Response metadata key: ``{policy: {"input": {label: count}, "output": {...}}}``."""


class Hit(NamedTuple):
    """One match of a scanner: what it was (never the matched text) and what to do."""

    label: str
    action: Action


Scanner = Callable[[str], tuple[str, list[Hit]]]

ALL_CHANNELS = frozenset({"text", "reasoning", "tool_arguments"})
"""Every channel of a stream: a scanner checks tool-call arguments and reasoning too, as
``invoke`` checks every string of an output."""

_NONE: Counter[str] = Counter()  # shared and never mutated: "nothing found"


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string in it (dict values, list and tuple items).

    Dict keys are left alone (they are structure, not content). Returns
    ``value`` itself when nothing changed, so the common case copies nothing.
    """
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        items = {key: map_strings(item, fn) for key, item in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list | tuple):
        mapped = [map_strings(item, fn) for item in value]
        if all(new is old for new, old in zip(mapped, value, strict=True)):
            return value
        return mapped if isinstance(value, list) else tuple(mapped)
    return value


def iter_strings(value: Any, *, keys: bool = False) -> Iterator[str]:
    """Every string in ``value`` (dict keys too when ``keys``)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if keys and isinstance(key, str):
                yield key
            yield from iter_strings(item, keys=keys)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_strings(item, keys=keys)


def violation(policy: str, message: str, **evidence: Any) -> gr.GuardrailViolation:
    """The exception a runtime policy raises to block a call, with one failed finding."""
    finding = gr.Finding(check=policy, passed=False, message=message, evidence=evidence)
    return gr.GuardrailViolation(message, policy=policy, findings=(finding,))


def note_redactions(response: gr.Response, policy: str,
                    counts: dict[Direction, Counter[str]]) -> gr.Response:
    """``response`` with this policy's redaction counts merged into its metadata."""
    if not any(counts.values()):
        return response
    notes = dict(response.metadata.get(REDACTIONS_KEY) or {})
    notes[policy] = {where: dict(found) for where, found in counts.items() if found}
    return response.model_copy(update={"metadata": {**response.metadata, REDACTIONS_KEY: notes}})


class ScanPolicy:
    """Runtime middleware running a scanner over the input and/or the output.

    Stateless: what it found in the input rides on the call's own stack
    until it is noted on the response. Blocking an input means the model is
    never called; blocking an output withholds the model's answer.
    """

    def __init__(self, name: str, *, input: Scanner | None, output: Scanner | None) -> None:
        self.name = name
        self._input = input
        self._output = output

    def __repr__(self) -> str:
        return f"ScanPolicy({self.name!r})"

    def _scan(self, value: Any, scanner: Scanner, where: Direction) -> tuple[Any, Counter[str]]:
        hits: list[Hit]
        if type(value) is str:  # the common case, without the walk's closure
            new_value, hits = scanner(value)
        else:
            hits = []

            def scan(text: str) -> str:
                new, found = scanner(text)
                hits.extend(found)
                return new

            new_value = map_strings(value, scan)
        if not hits:
            return new_value, _NONE  # the common case: no counting, no copies
        blocking = Counter(hit.label for hit in hits if hit.action == "block")
        if blocking:
            listed = ", ".join(f"{label} ({n})" for label, n in sorted(blocking.items()))
            raise violation(self.name, f"policy {self.name!r} blocked the {where}: it contains "
                            f"{listed}", where=where, matches=dict(blocking))
        return new_value, Counter(hit.label for hit in hits)

    def _before(self, request: gr.Request) -> tuple[gr.Request, Counter[str]]:
        if self._input is None:
            return request, _NONE
        new_input, counts = self._scan(request.input, self._input, "input")
        if new_input is not request.input:
            request = request.model_copy(update={"input": new_input})
        return request, counts

    def _after(self, response: gr.Response, input_counts: Counter[str]) -> gr.Response:
        output_counts = _NONE
        if self._output is not None:
            new_output, output_counts = self._scan(response.output, self._output, "output")
            if new_output is not response.output:
                response = response.model_copy(update={"output": new_output})
        if not (input_counts or output_counts):
            return response
        return note_redactions(response, self.name,
                               {"input": input_counts, "output": output_counts})

    def __call__(self, request: gr.Request,
                 call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
        request, counts = self._before(request)
        return self._after(call_next(request), counts)

    async def acall(self, request: gr.Request,
                    call_next: Callable[[gr.Request], Awaitable[gr.Response]]) -> gr.Response:
        request, counts = self._before(request)
        return self._after(await call_next(request), counts)

    def streaming(self) -> gr.StreamPolicy:
        """The stream side: the input scan before the stream opens, the output scanner's
        stream checks (a whole-response check when it has none)."""
        checks: tuple[Any, ...] = ()
        if self._output is not None:
            offer = getattr(self._output, "stream_checks", None)
            checks = tuple(offer()) if callable(offer) else (WholeScan(self._output),)
        before = None if self._input is None else self._stream_before
        return gr.StreamPolicy(self.name, checks=checks, before=before)

    def _stream_before(self, request: gr.Request) -> gr.StreamInput:
        request, counts = self._before(request)
        return gr.StreamInput(request, dict(counts))


class PatternCheck:
    """One compiled pattern as a stream check: each match is a hit, blocking or replaced.

    Its ``max_span`` is the pattern's (``gr.regex_span``), or ``window`` for a
    pattern with unbounded matches, else ``None``: the whole response.
    """

    channels = ALL_CHANNELS

    def __init__(self, pattern: re.Pattern[str], action: Action, replacement: str,
                 label: str | Callable[[re.Match[str]], str], window: int | None = None) -> None:
        self.pattern, self.label = pattern, label
        self.replacement = None if action == "block" else replacement
        span = gr.regex_span(pattern)
        self.max_span = span if span is not None or window is None else window + 2

    def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
        replacement, label, hit = self.replacement, self.label, gr.StreamHit
        if isinstance(label, str):
            return [hit(m.start(), m.end(), replacement, label)
                    for m in self.pattern.finditer(text, pos)]
        return [hit(m.start(), m.end(), replacement, label(m))
                for m in self.pattern.finditer(text, pos)]


class WholeScan:
    """Any scanner as a stream check that sees the whole response, at the end."""

    max_span = None
    channels = ALL_CHANNELS

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner

    def find(self, text: str, pos: int, offset: int) -> list[gr.StreamHit]:
        new, hits = self.scanner(text)
        blocking = [gr.StreamHit(0, len(text), None, hit.label) for hit in hits
                    if hit.action == "block"]
        if blocking:
            return blocking
        return [gr.StreamHit(0, len(text), new, "redacted")] if new != text else []


def replace_spans(text: str, spans: list[tuple[int, int]], replacement: str) -> str:
    """``text`` with each non-overlapping ``(start, end)`` span replaced by ``replacement``."""
    pieces: list[str] = []
    last = 0
    for start, end in sorted(spans):
        pieces.append(text[last:start])
        pieces.append(replacement)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
