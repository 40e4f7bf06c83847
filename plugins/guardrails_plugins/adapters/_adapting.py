"""What the adapters share: proposals from state diffs, feedback, self-rewriting prompts, usage.

No vendor package is imported here.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jsonpatch
from opentelemetry import metrics, trace

import guardrails as gr

GENAI_TOKEN_USAGE = "gen_ai.client.token.usage"
GENAI_PROVIDER = "gen_ai.provider.name"
GENAI_OPERATION = "gen_ai.operation.name"
GENAI_REQUEST_MODEL = "gen_ai.request.model"
GENAI_RESPONSE_MODEL = "gen_ai.response.model"
GENAI_RESPONSE_ID = "gen_ai.response.id"
GENAI_FINISH_REASONS = "gen_ai.response.finish_reasons"
GENAI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GENAI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GENAI_TOKEN_TYPE = "gen_ai.token.type"

# Sampling parameters with a GenAI semantic-conventions request attribute.
GENAI_REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "stop": "gen_ai.request.stop_sequences",
}


class StateChange(NamedTuple):
    """What an optimiser returns: the whole new state and why (the model's own account)."""

    state: dict[str, Any]
    rationale: str = ""
    kind: str | None = None
    """``prompt``, ``params``, ``tools``...; inferred from the changed keys when ``None``."""


_KINDS = {"system_prompt": "prompt", "instructions": "prompt", "params": "params",
          "model_settings": "params", "tools": "tools", "model": "model", "weights": "weights",
          "demos": "demos"}


def infer_kind(patch: Sequence[Mapping[str, Any]]) -> str:
    """The proposal kind from the top-level keys a patch touches (``state`` when mixed)."""
    kinds = {_KINDS.get(str(op["path"]).split("/")[1] if op["path"] else "", "state")
             for op in patch}
    return kinds.pop() if len(kinds) == 1 else "state"


def proposal_between(parent: dict[str, Any], child: dict[str, Any], *, rationale: str = "",
                     source: str = "model", kind: str | None = None
                     ) -> gr.UpdateProposal | None:
    """The proposal turning ``parent`` into ``child`` (RFC 6902, from ``jsonpatch.make_patch``);
    ``None`` when they are equal."""
    gr.canonical_json(child)  # a state must be JSON: fail here, naming the value, not later
    patch = jsonpatch.make_patch(parent, child).patch
    if not patch:
        return None
    return gr.UpdateProposal(parent=gr.state_version(parent), patch=patch,
                             kind=kind or infer_kind(patch), rationale=rationale, source=source)


# -- feedback -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    """One judged production answer the optimiser may learn from."""

    input: Any
    output: Any
    passed: bool
    note: str = ""
    """What was wrong (or right), in words."""


class FeedbackLog:
    """The optimiser's scratch memory: judged answers, newest last, at most ``limit``.

    Not state: it changes no answer, and a client built with ``with_state``
    starts with an empty log. Thread-safe.
    """

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._items: list[Feedback] = []
        self._lock = threading.Lock()

    def add(self, item: Feedback) -> None:
        with self._lock:
            self._items.append(item)
            del self._items[:-self.limit]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def items(self) -> tuple[Feedback, ...]:
        with self._lock:
            return tuple(self._items)

    def failures(self) -> tuple[Feedback, ...]:
        return tuple(item for item in self.items() if not item.passed)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Feedback]:
        return iter(self.items())


Complete = Callable[[str, str], str]
"""``complete(system_prompt, user_message) -> text``: one call to the client's own model."""


@dataclass(frozen=True)
class OptimizerContext:
    """What a prompt optimiser sees: a copy of the state, the feedback, and the model itself."""

    state: dict[str, Any]
    feedback: tuple[Feedback, ...]
    complete: Complete


Optimizer = Callable[[OptimizerContext], "StateChange | dict[str, Any] | None"]
"""A prompt-optimisation step: returns the new state (optionally with a rationale) or ``None``."""


REWRITE_INSTRUCTION = (
    "You maintain your own system prompt. Rewrite it so that the failures below do not happen "
    "again, keeping everything that still matters. Reply with the new system prompt only."
)


@dataclass(frozen=True)
class SelfRewritePrompt:
    """The model rewrites its own system prompt from its recorded failures (OPRO-style).

    Needs at least ``min_failures`` failures in the feedback; shows the model
    at most ``max_examples`` of them. The reply, stripped, becomes the new
    ``state[prompt_key]``; an empty reply or the same prompt proposes nothing.
    """

    min_failures: int = 1
    max_examples: int = 5
    prompt_key: str = "system_prompt"
    instruction: str = REWRITE_INSTRUCTION

    def __call__(self, context: OptimizerContext) -> StateChange | None:
        failures = [f for f in context.feedback if not f.passed]
        if len(failures) < self.min_failures:
            return None
        current = str(context.state.get(self.prompt_key, ""))
        shown = failures[-self.max_examples:]
        lines = [f"Current system prompt:\n{current}", "", "Failures:"]
        for item in shown:
            lines.append(f"- input: {item.input!s}\n  your answer: {item.output!s}"
                         + (f"\n  problem: {item.note}" if item.note else ""))
        reply = context.complete(self.instruction, "\n".join(lines)).strip()
        if not reply or reply == current:
            return None
        state = copy.deepcopy(context.state)
        state[self.prompt_key] = reply
        return StateChange(state, f"rewrote my system prompt after {len(failures)} failed "
                                  f"answers (showing myself {len(shown)})", "prompt")


def run_optimizer(optimizer: Optimizer | None, state: dict[str, Any], feedback: FeedbackLog,
                  complete: Complete, *, source: str = "model") -> gr.UpdateProposal | None:
    """Run one optimiser step against a copy of ``state``; the proposal it implies, or ``None``."""
    if optimizer is None:
        return None
    result = optimizer(OptimizerContext(copy.deepcopy(state), feedback.items(), complete))
    if result is None:
        return None
    change = result if isinstance(result, StateChange) else StateChange(dict(result))
    return proposal_between(state, change.state, rationale=change.rationale, source=source,
                            kind=change.kind)


# -- GenAI usage ----------------------------------------------------------------------------


def genai_span(name: str) -> trace.Span | None:
    """The current span if it is the guard's recording GenAI client span named ``name``.

    The guard makes its GenAI span current around ``client.invoke``; outside a
    guarded call (a canary, an unwrapped client) there is none and nothing is
    recorded.
    """
    span = trace.get_current_span()
    try:
        if span.is_recording() and getattr(span, "name", None) == name:
            return span
    except Exception:
        return None
    return None


@dataclass
class UsageRecorder:
    """Puts token usage on the guard's GenAI span and into ``gen_ai.client.token.usage``.

    Never raises: telemetry must not break a call.
    """

    meter_provider: metrics.MeterProvider | None = None
    _histogram: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            meter = metrics.get_meter("guardrails.adapters", meter_provider=self.meter_provider)
            self._histogram = meter.create_histogram(
                GENAI_TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used")
        except Exception:
            self._histogram = None

    def record(self, span_name: str, attributes: Mapping[str, Any], *, input_tokens: int | None,
               output_tokens: int | None, response: Mapping[str, Any] | None = None) -> None:
        try:
            span = genai_span(span_name)
            if span is not None:
                values = {GENAI_INPUT_TOKENS: input_tokens, GENAI_OUTPUT_TOKENS: output_tokens,
                          **(response or {})}
                span.set_attributes({k: v for k, v in values.items() if v is not None})
            if self._histogram is None:
                return
            base = {k: v for k, v in attributes.items()
                    if k in (GENAI_OPERATION, GENAI_PROVIDER, GENAI_REQUEST_MODEL)}
            if response and response.get(GENAI_RESPONSE_MODEL):
                base[GENAI_RESPONSE_MODEL] = response[GENAI_RESPONSE_MODEL]
            for kind, value in (("input", input_tokens), ("output", output_tokens)):
                if value is not None:
                    self._histogram.record(value, {**base, GENAI_TOKEN_TYPE: kind})
        except Exception:
            pass  # telemetry never breaks a call


def request_attributes(params: Mapping[str, Any]) -> dict[str, Any]:
    """``gen_ai.request.*`` attributes for the sampling parameters that have one."""
    out: dict[str, Any] = {}
    for key, attribute in GENAI_REQUEST_PARAMS.items():
        value = params.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value] if key == "stop" else value
        if isinstance(value, (bool, int, float, str)) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            out[attribute] = value
    return out


def text_of(value: Any) -> str:
    """A request input as one text (the last user turn of a message list)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for message in reversed(value):
            if isinstance(message, dict) and message.get("role") in ("user", "human"):
                return str(message.get("content", ""))
    return str(value)


# -- unusable responses ---------------------------------------------------------------------


def unusable(adapter: str, reason: str, message: str) -> gr.UnusableResponseError:
    """The typed error an adapter raises instead of returning an answer nobody can use.

    ``message`` describes the response's structure (which field, which type),
    never its content: the input may be a hidden canary case.
    """
    return gr.UnusableResponseError(f"the {adapter} adapter got an unusable response: {message}",
                                    adapter=adapter, reason=reason)


def usable_text(adapter: str, text: Any, what: str) -> str:
    """``text`` if it is a non-blank string; else ``UnusableResponseError`` (``empty_content``
    for ``None``, empty or blank text, ``wrong_schema`` for another type)."""
    if text is None:
        raise unusable(adapter, "empty_content", f"{what} is null")
    if not isinstance(text, str):
        raise unusable(adapter, "wrong_schema", f"{what} is of type {type(text).__name__}, not text")
    if not text.strip():
        raise unusable(adapter, "empty_content",
                       f"{what} is {'empty' if not text else 'blank (whitespace only)'}")
    return text


def usable_json(adapter: str, value: Any, what: str = "the prediction") -> Any:
    """``value`` as plain JSON (numpy scalars unwrapped) when every part of it is usable.

    Raises ``UnusableResponseError``: ``no_answer`` for ``None``, ``nan`` for a
    NaN or infinite number anywhere in it, ``wrong_type`` for anything that is
    not JSON (an array, an object), each naming where in the value it is.
    """
    if value is None:
        raise unusable(adapter, "no_answer", f"{what} is None (the model gave no answer)")
    return _usable_part(adapter, value, what, ())


def _where(what: str, path: tuple[Any, ...]) -> str:
    return what + "".join(f"[{key!r}]" for key in path)


def _usable_part(adapter: str, value: Any, what: str, path: tuple[Any, ...]) -> Any:
    # Runs on every prediction: exact-type checks first, the path formatted only on an error.
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise unusable(adapter, "nan",
                           f"{_where(what, path)} is {value!r} (not a finite number)")
        return value
    if kind is list or kind is tuple:
        return [_usable_part(adapter, v, what, (*path, i)) for i, v in enumerate(value)]
    if kind is dict and all(type(k) in _KEYS for k in value):
        return {k: _usable_part(adapter, v, what, (*path, k)) for k, v in value.items()}
    return _usable_other(adapter, value, what, path)


_KEYS = frozenset({str, int, float, bool})


def _usable_other(adapter: str, value: Any, what: str, path: tuple[Any, ...]) -> Any:
    """Numpy scalars, subclasses of the JSON types and other mappings; else ``wrong_type``."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():  # a numpy scalar
        return _usable_part(adapter, item(), what, path)
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return _usable_part(adapter, float(value) if isinstance(value, float) else int(value),
                            what, path)
    if isinstance(value, list | tuple):
        return _usable_part(adapter, list(value), what, path)
    if isinstance(value, Mapping) and all(isinstance(k, str | int | float | bool) for k in value):
        return {k: _usable_part(adapter, v, what, (*path, k)) for k, v in value.items()}
    shape = getattr(value, "shape", None)
    raise unusable(adapter, "wrong_type",
                   f"{_where(what, path)} is a {type(value).__module__}.{type(value).__qualname__}"
                   + (f" of shape {tuple(shape)}" if shape is not None else "")
                   + ", not a JSON value")
