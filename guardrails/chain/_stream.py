"""Streaming through the output policies: the hold-back buffer.

A middleware that can check a stream offers ``streaming() -> StreamPolicy | None``.
Its ``StreamPolicy`` says what it does to the request before the model is
called (``before``) and which output checks it runs (``checks``, in order).
A ``StreamCheck`` declares ``max_span``: how many characters a hit's verdict
may depend on (lookaround included), or ``None`` when it needs the whole
response. The buffer here releases a character only once every check has
scanned it in its final context: ``max_span`` characters behind the head of
the stream for a span check, at the end of the stream for a whole-response
check. Hits (blocks or replacements) apply only to text not yet released.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._decision import Finding
from .._errors import ConfigError, GuardrailViolation, UnusableResponseError
from .._messages import Request, StreamChunk, ToolCallDelta

CHANNELS = frozenset({"text", "reasoning", "tool_arguments"})
"""The channels of a stream: answer text, reasoning deltas, tool-call argument deltas."""

OVERFLOW_POLICY = "stream_max_held"
"""The ``policy`` of the ``GuardrailViolation`` raised when the held-back text passes the cap."""


class StreamHit(NamedTuple):
    """One hit of a stream check, in the coordinates of the text it was given."""

    start: int
    end: int
    replacement: str | None
    """The text put in place of ``text[start:end]``; ``None`` blocks the stream."""
    label: str
    """What was found (a rule name, a kind), never the matched text."""


@runtime_checkable
class StreamCheck(Protocol):
    """The streaming side of one output check.

    ``find(text, pos, offset)`` behaves like ``re.finditer(text, pos)``:
    non-overlapping hits in increasing order, each starting at or after
    ``pos``; ``text[:pos]`` is context already released (at least
    ``max_span`` characters of it when there are that many) and ``offset``
    is the position of ``text[0]`` in the whole channel. The verdict on a hit
    (or on no hit) starting at ``s`` may depend only on ``text[s - max_span:
    s + max_span]``. With ``max_span = None`` ``find`` is called once, on the
    whole text of the channel, when the stream ends.
    """

    max_span: int | None
    channels: frozenset[str]

    def find(self, text: str, pos: int, offset: int) -> Iterable[StreamHit]: ...


class StreamInput(NamedTuple):
    """What a ``StreamPolicy.before`` may return instead of a bare ``Request``: the request
    and what it redacted in the input, ``{label: count}``, reported in the ``StreamEnd``'s
    ``guardrails.redactions`` as ``invoke`` reports it."""

    request: Request
    redactions: dict[str, int]


@dataclass(frozen=True)
class StreamPolicy:
    """How one middleware checks a stream (returned by its ``streaming()`` method).

    ``before`` runs on the request before the upstream stream opens, as the
    middleware's input side does in ``invoke`` (it returns the request,
    possibly changed, or a ``StreamInput`` carrying what it redacted, or
    raises ``GuardrailViolation``). ``checks`` run on the
    output, in order, each on what the one before it released.
    """

    name: str
    checks: tuple[StreamCheck, ...] = ()
    before: Callable[[Request], Request | StreamInput] | None = None


def stream_policies(middlewares: Sequence[Any]) -> tuple[StreamPolicy, ...] | None:
    """Each middleware's ``StreamPolicy``, or ``None`` when one of them has no streaming side.

    Raises ``ConfigError`` naming the policy when what it declares is malformed.
    """
    policies = []
    for middleware in middlewares:
        offer = getattr(middleware, "streaming", None)
        try:
            policy = offer() if callable(offer) else None
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"middleware {middleware!r}: streaming() raised "
                              f"{type(exc).__name__}: {exc}") from exc
        if policy is None:
            return None
        if not isinstance(policy, StreamPolicy):
            raise ConfigError(f"middleware {middleware!r}: streaming() returned "
                              f"{type(policy).__name__}, not a StreamPolicy")
        for check in policy.checks:
            _validate(policy.name, check)
        policies.append(policy)
    return tuple(policies)


def _validate(name: str, check: Any) -> None:
    span = getattr(check, "max_span", "missing")
    if span is not None and (type(span) is not int or span < 0):
        raise ConfigError(f"policy {name!r}: a stream check's max_span must be a number of "
                          f"characters >= 0 or None (whole response), not {span!r}")
    channels = getattr(check, "channels", None)
    if not isinstance(channels, frozenset) or not channels or not channels <= CHANNELS:
        raise ConfigError(f"policy {name!r}: a stream check's channels must be a non-empty "
                          f"frozenset of {sorted(CHANNELS)}, not {channels!r}")
    if not callable(getattr(check, "find", None)):
        raise ConfigError(f"policy {name!r}: a stream check needs find(text, pos, offset)")


def regex_span(pattern: re.Pattern[str] | str) -> int | None:
    """The ``max_span`` of a regular expression: ``None`` when its matches are unbounded.

    The widest match plus the widths of its lookarounds plus two characters
    for ``\\b`` and ``$``, which look one character past a match. ``None``
    also when a match may be empty (``\\b``, ``x*``), or when the width cannot
    be computed: such a pattern holds the whole response back, it never
    releases text early.
    """
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    try:
        return _parsed_span(compiled)
    except Exception:
        return None


def _parsed_span(compiled: re.Pattern[str]) -> int | None:
    # The standard library has no public way to get a pattern's width; re._parser (the
    # parser re.compile uses, private) has one. Only this function touches it, and any
    # failure (a Python that changed it) means "unbounded": whole-response buffering.
    from re import _parser  # type: ignore[attr-defined]

    tree = _parser.parse(compiled.pattern, compiled.flags)
    unbounded = getattr(_parser, "MAXWIDTH", _parser.MAXREPEAT)
    shortest, widest = tree.getwidth()
    width = int(widest) + _lookaround_width(tree, _parser)
    # An empty match restarted at the same place would be found twice: whole response.
    return None if width >= unbounded or shortest == 0 else width + 2


def _lookaround_width(tree: Any, parser: Any) -> int:
    """The summed widest widths of every lookahead and lookbehind in ``tree`` (an upper
    bound of how far around a match the engine may look)."""
    total = 0
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, parser.SubPattern):
            for op, av in item.data:
                if op in (parser.ASSERT, parser.ASSERT_NOT):
                    total += int(av[1].getwidth()[1])
                stack.append(av)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total


def violation(name: str, where: str, labels: Sequence[str]) -> GuardrailViolation:
    """The error a blocking hit ends the stream with (names the labels, never the text)."""
    listed = ", ".join(sorted(set(labels)))
    message = f"policy {name!r} blocked the streamed {where}: it contains {listed}"
    matches = {label: labels.count(label) for label in set(labels)}
    finding = Finding(check=name, passed=False, message=message,
                      evidence={"where": where, "matches": matches, "stream": True})
    return GuardrailViolation(message, policy=name, findings=(finding,))


def _nbytes(text: str) -> int:
    """UTF-8 bytes of ``text`` (a lone surrogate counts as the 3 bytes it would take)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Stage:
    """One check on one channel: the text it holds back and where its scan stands."""

    __slots__ = ("base", "buf", "check", "name", "parts", "pos", "redacted", "span", "where",
                 "whole")

    def __init__(self, name: str, where: str, check: StreamCheck) -> None:
        self.check, self.name, self.where = check, name, where
        self.span = check.max_span
        self.buf = ""
        self.base = 0
        """Position of ``buf[0]`` in the channel."""
        self.pos = 0
        """Index in ``buf`` up to which the text is released."""
        self.parts: list[str] = []
        """Whole-response checks: what arrived so far (joined once, at the end)."""
        self.whole = 0
        """Whole-response checks: bytes in ``parts``."""
        self.redacted: dict[str, int] | None = None
        """Replacements applied, by label (``None`` until the first)."""

    def held(self) -> int:
        if self.span is None:
            return self.whole
        rest = self.buf[self.pos:]
        return _nbytes(rest)

    def feed(self, text: str, final: bool) -> str:
        """Take ``text``; return what is now cleared (replacements applied)."""
        span = self.span
        if span is None:
            if text:
                self.parts.append(text)
                self.whole += _nbytes(text)
            if not final:
                return ""
            self.buf, self.parts, self.whole = "".join(self.parts), [], 0
            limit = len(self.buf)
        else:
            buf = self.buf = self.buf + text if self.buf else text
            limit = len(buf) if final else len(buf) - span
            if limit <= self.pos:
                return ""
        out = self._scan(limit, final)
        if span is not None and self.pos > span:
            cut = self.pos - span  # keep span characters of context for lookbehind
            self.buf, self.base, self.pos = self.buf[cut:], self.base + cut, span
        return out

    def _scan(self, limit: int, final: bool) -> str:
        buf, pos = self.buf, self.pos
        out: list[str] = []
        blocked: list[str] = []
        for start, end, replacement, label in self.check.find(buf, pos, self.base):
            if start >= limit and not final:
                break  # undecided: it may still grow, or not be there, in the final text
            if start < pos or end < start or end > len(buf):
                raise ConfigError(f"policy {self.name!r}: its stream check returned a hit "
                                  f"outside the unreleased text ({start}, {end})")
            if replacement is None:
                blocked.append(label)
                continue
            out.append(buf[pos:start])
            out.append(replacement)
            pos = end
            counts = self.redacted if self.redacted is not None else {}
            counts[label] = counts.get(label, 0) + 1
            self.redacted = counts
        if blocked:
            raise violation(self.name, self.where, blocked)
        if pos < limit:
            out.append(buf[pos:limit])
            pos = limit
        self.pos = pos
        return out[0] if len(out) == 1 else "".join(out)


class _Pipeline:
    """The checks that apply to one channel, each fed what the one before it released."""

    __slots__ = ("stages",)

    def __init__(self, stages: list[_Stage]) -> None:
        self.stages = stages

    def push(self, text: str, final: bool = False) -> str:
        for stage in self.stages:
            text = stage.feed(text, final)
        return text

    def held(self) -> int:
        stages = self.stages
        return stages[0].held() if len(stages) == 1 else sum(s.held() for s in stages)


class StreamBuffer:
    """One stream through the output checks of ``policies`` (one per stream; not thread-safe).

    ``feed(item)`` takes an upstream item (``str`` or ``StreamChunk``) and
    returns the ``StreamChunk`` now cleared, or ``None``; ``finish()`` runs
    every check in its final context and returns the rest. Both raise
    ``GuardrailViolation`` on a block, and on passing ``max_held`` bytes held
    back (``0``: no cap). ``max_seen`` is the most bytes held at once.
    """

    def __init__(self, policies: Sequence[StreamPolicy], max_held: int = 0) -> None:
        # Output checks run innermost first, as a response passes the chain back out.
        self._checks = [(policy.name, check) for policy in reversed(policies)
                        for check in policy.checks]
        self._pipes: dict[Any, _Pipeline] = {}
        self._text = self._pipe("text")
        self.max_held = max_held
        self.max_seen = 0
        self.usage: dict[str, int] | None = None
        self.finish_reason: str | None = None

    def _pipe(self, key: Any) -> _Pipeline:
        channel = key if isinstance(key, str) else "tool_arguments"
        where = channel if isinstance(key, str) else f"tool call {key[1]} arguments"
        pipe = self._pipes[key] = _Pipeline([_Stage(name, where, check)
                                             for name, check in self._checks
                                             if channel in check.channels])
        return pipe

    def _measure(self) -> None:
        pipes = self._pipes
        held = (self._text.held() if len(pipes) == 1
                else sum(pipe.held() for pipe in pipes.values()))
        if held > self.max_seen:
            self.max_seen = held
        if self.max_held and held > self.max_held:
            raise GuardrailViolation(
                f"the stream held back {held} bytes, over [guard] stream_max_held = "
                f"{self.max_held}; a policy needs more of the response than the cap allows "
                "(raise the cap, set it to 0 for none, or call invoke())",
                policy=OVERFLOW_POLICY, findings=(Finding(
                    check=OVERFLOW_POLICY, passed=False, message="stream buffer cap exceeded",
                    evidence={"held": held, "cap": self.max_held}),))

    def feed(self, item: str | StreamChunk) -> StreamChunk | None:
        if type(item) is str:
            text = self._text.push(item)
            self._measure()
            return StreamChunk(text=text) if text else None
        if not isinstance(item, StreamChunk):
            raise UnusableResponseError(
                f"the client's stream yielded a {type(item).__name__}; a stream yields str or "
                "guardrails.StreamChunk", adapter="stream", reason="wrong_type")
        if item.usage is not None:
            self.usage = item.usage
        if item.finish_reason is not None:
            self.finish_reason = item.finish_reason
        text = self._text.push(item.text) if item.text else ""
        reasoning = self._channel("reasoning", item.reasoning) if item.reasoning else ""
        tools = tuple(self._tools(item.tool_calls))
        self._measure()
        if not (text or reasoning or tools):
            return None
        return StreamChunk(text=text, reasoning=reasoning, tool_calls=tools)

    def _channel(self, key: Any, text: str) -> str:
        pipe = self._pipes.get(key) or self._pipe(key)
        return pipe.push(text)

    def _tools(self, deltas: Iterable[ToolCallDelta]) -> Iterable[ToolCallDelta]:
        for delta in deltas:
            cleared = self._channel(("tool", delta.index), delta.arguments)
            if cleared or delta.id is not None or delta.name is not None:
                yield ToolCallDelta(index=delta.index, id=delta.id, name=delta.name,
                                    arguments=cleared)

    def redactions(self) -> dict[str, dict[str, int]]:
        """Replacements applied so far, ``{policy: {label: count}}`` over every channel."""
        found: dict[str, dict[str, int]] = {}
        for pipe in self._pipes.values():
            for stage in pipe.stages:
                if stage.redacted:
                    counts = found.setdefault(stage.name, {})
                    for label, n in stage.redacted.items():
                        counts[label] = counts.get(label, 0) + n
        return found

    def finish(self) -> StreamChunk | None:
        """The end of the stream: every check sees its channel's text in its final context."""
        text = self._text.push("", True)
        reasoning = self._pipes["reasoning"].push("", True) if "reasoning" in self._pipes else ""
        tools = []
        for key, pipe in self._pipes.items():
            if isinstance(key, tuple):
                rest = pipe.push("", True)
                if rest:
                    tools.append(ToolCallDelta(index=key[1], arguments=rest))
        if not (text or reasoning or tools):
            return None
        return StreamChunk(text=text, reasoning=reasoning, tool_calls=tuple(tools))
