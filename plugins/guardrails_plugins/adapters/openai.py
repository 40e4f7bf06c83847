"""Adapter for OpenAI-compatible chat clients (the ``openai`` SDK, sync and async).

``OpenAIChatClient`` is a self-updating client whose state is what a prompt
optimiser rewrites: the system prompt, the model name, the sampling
parameters and the tool definitions::

    {"provider": "openai", "model": "gpt-4o-mini", "system_prompt": "...",
     "params": {"temperature": 0.2}, "tools": [{"type": "function", ...}]}

Its proposals come from an optimiser (``optimizer=``), by default none; the
built-in ``SelfRewritePrompt`` asks the model itself to rewrite its system
prompt from the failures recorded with ``record(...)``. Calls through a guard
get a GenAI client span ``chat {model}`` with token usage
(``gen_ai.usage.input_tokens`` / ``output_tokens``), and the
``gen_ai.client.token.usage`` metric. SDK errors (HTTP status, connection,
timeout) propagate unchanged; the SDK's own retry settings apply. An HTTP 200
answer that holds nothing usable (not a chat completion, no choices, a null
or blank content without tool calls, a ``refusal``) raises
``guardrails.UnusableResponseError`` instead of returning ``""``.

``stream(request)`` / ``astream(request)`` call the same endpoint with
``stream=True`` and ``stream_options={"include_usage": True}`` and yield
``guardrails.StreamChunk`` items: text, reasoning (``reasoning_content`` or
``reasoning`` deltas, where an OpenAI-compatible server sends them) and
tool-call argument deltas as they arrive, then one last chunk with the
finish reason and the usage. Closing the generator closes the SDK stream
(and with it the HTTP response). A stream that cannot be used raises
``UnusableResponseError``: malformed chunk JSON, a chunk that is not a
completion chunk, no choices at all, a refusal, no text and no tool call,
or a body that ended without a finish reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai
from opentelemetry import metrics

import guardrails as gr

from . import require
from ._adapting import (
    GENAI_FINISH_REASONS,
    GENAI_OPERATION,
    GENAI_PROVIDER,
    GENAI_REQUEST_MODEL,
    GENAI_RESPONSE_ID,
    GENAI_RESPONSE_MODEL,
    Feedback,
    FeedbackLog,
    Optimizer,
    SelfRewritePrompt,
    StateChange,
    UsageRecorder,
    request_attributes,
    run_optimizer,
    unusable,
    usable_text,
)

__all__ = ["OpenAIChatClient", "SelfRewritePrompt", "StateChange"]

STATE_KEYS = ("provider", "model", "system_prompt", "params", "tools")
RESERVED_PARAMS = frozenset({"model", "messages", "tools", "stream", "functions", "n"})
"""Call arguments the adapter owns: state keys, streaming (``stream``/``astream`` set it), or
features it does not support (several choices)."""
STREAM_OPTIONS = {"include_usage": True}
REASONING_FIELDS = ("reasoning_content", "reasoning")
"""Delta fields OpenAI-compatible servers (vLLM, DeepSeek, OpenRouter) stream reasoning in."""


def _validate_state(state: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(state, Mapping):
        raise ValueError(f"an OpenAI client state is a JSON object, got {type(state).__name__}")
    unknown = sorted(set(state) - set(STATE_KEYS))
    missing = [key for key in STATE_KEYS if key not in state]
    if unknown or missing:
        raise ValueError("an OpenAI client state has exactly the keys "
                         f"{', '.join(STATE_KEYS)}"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                         + (f"; missing: {', '.join(missing)}" if missing else ""))
    if not isinstance(state["model"], str) or not state["model"]:
        raise ValueError("state 'model' must be a non-empty model name")
    if not isinstance(state["system_prompt"], str):
        raise ValueError("state 'system_prompt' must be a string")
    if not isinstance(state["params"], Mapping):
        raise ValueError("state 'params' must be an object of sampling parameters")
    clash = sorted(RESERVED_PARAMS & set(state["params"]))
    if clash:
        raise ValueError(f"state 'params' may not set {', '.join(clash)}: the adapter owns them")
    if not isinstance(state["tools"], list) or not all(isinstance(t, Mapping)
                                                         for t in state["tools"]):
        raise ValueError("state 'tools' must be a list of tool definitions (objects)")
    gr.canonical_json(state)
    return copy.deepcopy(dict(state))


def _messages(system_prompt: str, value: Any) -> list[dict[str, Any]]:
    """The messages of one call: the state's system prompt, then the request's turns."""
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if isinstance(value, str):
        return [*head, {"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value):
        for message in value:
            if message["role"] in ("system", "developer"):
                raise ValueError("a request may not carry a system or developer message: the "
                                 "system prompt is gated state; send user/assistant/tool turns")
        return [*head, *(dict(m) for m in value)]
    raise ValueError("an OpenAI request input is a string (one user message) or a list of "
                     f"messages with a 'role'; got {type(value).__name__}")


def _output(completion: Any) -> Any:
    """The answer: the message text, or ``{"content", "tool_calls"}`` when it calls tools.

    Raises ``UnusableResponseError`` for a completion with nothing to answer
    with (see ``_message``), never returns ``""`` for it.
    """
    message = _message(completion)
    calls = getattr(message, "tool_calls", None) or []
    if not calls:
        return usable_text("openai", message.content, "the message content")
    if not isinstance(calls, list):
        raise unusable("openai", "wrong_schema",
                       f"'tool_calls' is a {type(calls).__name__}, not a list")
    for i, call in enumerate(calls):
        if not isinstance(getattr(getattr(call, "function", None), "name", None), str):
            raise unusable("openai", "wrong_schema", f"tool call {i} has no function name")
    return {"content": message.content,
            "tool_calls": [{"id": call.id, "name": call.function.name,
                            "arguments": call.function.arguments} for call in calls]}


def _message(completion: Any) -> Any:
    """The first choice's message of a usable completion; ``UnusableResponseError`` when the
    body was not a chat completion, had no choices, no message, or a refusal instead.

    Duck-typed (any object with the SDK's attributes will do), since ``client`` may be
    any object with the SDK's ``chat.completions.create``.
    """
    if isinstance(completion, str | bytes | list | int | float | bool) or completion is None:
        raise unusable("openai", "wrong_schema",
                       f"the body is a JSON {type(completion).__name__}, not a chat completion")
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list | tuple):
        extra = sorted(getattr(completion, "model_extra", None) or {})[:5]
        raise unusable("openai", "wrong_schema",
                       "the body is not a chat completion (no 'choices' list"
                       + (f"; unexpected fields: {', '.join(map(str, extra))}" if extra else "")
                       + ")")
    if not choices:
        raise unusable("openai", "no_choices", "the completion has no choices")
    message = getattr(choices[0], "message", None)
    if message is None or not hasattr(message, "content"):
        raise unusable("openai", "wrong_schema", "the first choice has no message")
    if getattr(message, "refusal", None):
        # The model declined through the API's refusal field: no text to judge or serve.
        raise unusable("openai", "refusal", "the model refused (message.refusal is set), "
                                            "no content was returned")
    return message


@dataclass
class _StreamState:
    """What one stream has shown so far: enough to tell a usable stream from a broken one."""

    choices: int = 0
    text: list[str] = field(default_factory=list)
    calls: dict[int, bool] = field(default_factory=dict)
    """Tool-call index -> whether a function name arrived for it."""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    id: str | None = None

    def read(self, chunk: Any) -> gr.StreamChunk | None:
        """The new parts of one SDK chunk (``None`` when it has none); raises
        ``UnusableResponseError`` for a chunk nobody can use."""
        choices = getattr(chunk, "choices", None)
        if not isinstance(choices, list):
            raise unusable("openai", "wrong_schema",
                           f"a streamed {type(chunk).__name__} is not a chat completion chunk "
                           "(no 'choices' list)")
        self.model = getattr(chunk, "model", None) or self.model
        self.id = getattr(chunk, "id", None) or self.id
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = _usage(usage)
        if not choices:
            return None
        self.choices += 1
        choice = choices[0]
        delta = getattr(choice, "delta", None)
        if delta is None:
            raise unusable("openai", "wrong_schema", "a streamed choice has no 'delta'")
        if getattr(delta, "refusal", None):
            raise unusable("openai", "refusal", "the model refused (delta.refusal is set), "
                                                "no content was returned")
        text = _delta_text(getattr(delta, "content", None), "delta.content")
        extra = getattr(delta, "model_extra", None)  # fields the SDK's model does not name
        reasoning = "".join(_delta_text(extra.get(name), f"delta.{name}")
                            for name in REASONING_FIELDS) if extra else ""
        calls = tuple(self._call(call) for call in getattr(delta, "tool_calls", None) or [])
        self.text.append(text)
        if getattr(choice, "finish_reason", None):
            self.finish_reason = str(choice.finish_reason)
        if text or reasoning or calls:
            return gr.StreamChunk(text=text, reasoning=reasoning, tool_calls=calls)
        return None

    def _call(self, call: Any) -> gr.ToolCallDelta:
        index = getattr(call, "index", None)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise unusable("openai", "wrong_schema", "a streamed tool call has no valid 'index'")
        function = getattr(call, "function", None)
        name = getattr(function, "name", None)
        self.calls[index] = self.calls.get(index, False) or (isinstance(name, str) and bool(name))
        return gr.ToolCallDelta(index=index, id=getattr(call, "id", None), name=name,
                                arguments=_delta_text(getattr(function, "arguments", None),
                                                      "a tool call's arguments"))

    def end(self) -> gr.StreamChunk:
        """The last chunk (finish reason, usage) of a stream that ended well; else
        ``UnusableResponseError``."""
        if self.finish_reason is None:
            if not self.choices:
                raise unusable("openai", "no_choices", "the stream ended without any choice")
            raise unusable("openai", "truncated", "the stream ended without a finish reason "
                                                  "(the body was cut off before [DONE])")
        unnamed = [i for i, named in self.calls.items() if not named]
        if unnamed:
            raise unusable("openai", "wrong_schema", f"streamed tool call {unnamed[0]} has no "
                                                     "function name")
        if not self.calls:
            usable_text("openai", "".join(self.text), "the streamed content")
        return gr.StreamChunk(usage=self.usage, finish_reason=self.finish_reason)


def _delta_text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise unusable("openai", "wrong_schema", f"{what} is of type {type(value).__name__}, "
                                                 "not text")
    return value


def _usage(usage: Any) -> dict[str, int]:
    """Token counts under the GenAI names (``input_tokens``, ``output_tokens``, ``total_tokens``)."""
    names = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens",
             "total_tokens": "total_tokens"}
    counts = {new: getattr(usage, old, None) for old, new in names.items()}
    return {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}


def _malformed(exc: json.JSONDecodeError) -> gr.UnusableResponseError:
    return unusable("openai", "malformed_chunk",
                    f"a streamed event is not JSON ({exc.msg} at character {exc.pos})")


def _sync_twin(client: openai.AsyncOpenAI) -> openai.OpenAI:
    """A sync client with the async one's settings (canaries and ``invoke`` are sync)."""
    if callable(client.api_key):
        raise gr.ConfigError("this AsyncOpenAI client takes its API key from a callable; pass "
                             "a sync openai.OpenAI as well: OpenAIChatClient(sync, async_client=...)")
    return openai.OpenAI(api_key=client.api_key, organization=client.organization,
                         project=client.project, base_url=client.base_url, timeout=client.timeout,
                         max_retries=client.max_retries,
                         default_headers=getattr(client, "_custom_headers", None) or None,
                         default_query=getattr(client, "_custom_query", None) or None)


class OpenAIChatClient:
    """An OpenAI-compatible chat model as a ``SelfUpdatingClient``.

    ``client`` is an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (or any
    object with the same ``chat.completions.create``); give ``async_client``
    too for native async calls. With only an async client, a sync twin with
    its settings (key, base URL, timeout, retries, headers) serves ``invoke``;
    with only a sync client, ``ainvoke`` runs ``invoke`` in a thread.

    ``invoke(request)``: ``request.input`` is a string (one user message) or
    a list of ``{"role", "content"}`` turns (no system message: the system
    prompt is state). ``request.params`` are extra call arguments; the
    state's ``params`` win on a clash. Returns the message text, or
    ``{"content", "tool_calls": [{"id", "name", "arguments"}]}``.
    """

    def __init__(self, client: Any, *, model: str, system_prompt: str = "",
                 params: Mapping[str, Any] | None = None,
                 tools: Sequence[Mapping[str, Any]] = (), async_client: Any = None,
                 optimizer: Optimizer | None = None, provider: str = "openai",
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        require(client, "openai")
        if async_client is not None:
            require(async_client, "openai")
        if isinstance(client, openai.AsyncOpenAI):
            async_client = async_client or client
            client = _sync_twin(client)
        self._sync = client
        self._async = async_client
        self.optimizer = optimizer
        self.feedback = FeedbackLog()
        self._usage = UsageRecorder(meter_provider)
        self._state = _validate_state({"provider": provider, "model": model,
                                       "system_prompt": system_prompt, "params": dict(params or {}),
                                       "tools": [dict(t) for t in tools]})

    def _clone(self, state: dict[str, Any]) -> OpenAIChatClient:
        clone = object.__new__(OpenAIChatClient)
        clone._sync, clone._async = self._sync, self._async
        clone.optimizer = self.optimizer
        clone.feedback = FeedbackLog()
        clone._usage = self._usage
        clone._state = state
        return clone

    # -- the protocol -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def with_state(self, state: dict[str, Any]) -> OpenAIChatClient:
        """A new client on ``state`` sharing the SDK clients and optimiser; ``self`` is untouched.

        Raises ``ValueError`` for a state this adapter cannot serve (unknown or
        missing keys, a different provider, reserved parameters).
        """
        checked = _validate_state(state)
        if checked["provider"] != self._state["provider"]:
            raise ValueError(f"state provider {checked['provider']!r} is not this client's "
                             f"{self._state['provider']!r}; a provider change needs another client")
        return self._clone(checked)

    def _call_args(self, request: gr.Request) -> dict[str, Any]:
        state = self._state
        extra = dict(request.params)
        clash = sorted(RESERVED_PARAMS & set(extra))
        if clash:
            raise ValueError(f"request params may not set {', '.join(clash)}: the adapter owns them")
        args: dict[str, Any] = {**extra, **state["params"], "model": state["model"],
                                "messages": _messages(state["system_prompt"], request.input)}
        if state["tools"]:
            args["tools"] = copy.deepcopy(state["tools"])
        return args

    def invoke(self, request: gr.Request) -> Any:
        completion = self._sync.chat.completions.create(**self._call_args(request))
        self._record_usage(completion)
        return _output(completion)

    async def ainvoke(self, request: gr.Request) -> Any:
        if self._async is None:
            return await asyncio.to_thread(self.invoke, request)
        completion = await self._async.chat.completions.create(**self._call_args(request))
        self._record_usage(completion)
        return _output(completion)

    def _stream_args(self, request: gr.Request) -> dict[str, Any]:
        return {**self._call_args(request), "stream": True,
                "stream_options": dict(STREAM_OPTIONS)}

    def stream(self, request: gr.Request) -> Generator[gr.StreamChunk, None, None]:
        """The answer as ``StreamChunk`` items, the last one with finish reason and usage.

        Closing the generator early closes the HTTP response. SDK errors
        (status, connection, timeout, a connection dropped mid-body) propagate
        unchanged; an unusable stream raises ``UnusableResponseError``.
        """
        sdk_stream = self._sync.chat.completions.create(**self._stream_args(request))
        state = _StreamState()
        try:
            try:
                for chunk in sdk_stream:
                    item = state.read(chunk)
                    if item is not None:
                        yield item
            except json.JSONDecodeError as exc:
                raise _malformed(exc) from None
            last = state.end()
            self._record_stream_usage(state)
            yield last
        finally:
            close = getattr(sdk_stream, "close", None)  # any object with the SDK's API may serve
            if callable(close):
                close()

    async def astream(self, request: gr.Request) -> AsyncIterator[gr.StreamChunk]:
        """``stream`` on the async SDK client; without one, the sync stream in a worker thread.

        ``aclose()`` closes the HTTP response.
        """
        if self._async is None:
            async for threaded in _in_thread(self.stream(request)):
                yield threaded
            return
        sdk_stream = await self._async.chat.completions.create(**self._stream_args(request))
        state = _StreamState()
        try:
            try:
                async for chunk in sdk_stream:
                    item = state.read(chunk)
                    if item is not None:
                        yield item
            except json.JSONDecodeError as exc:
                raise _malformed(exc) from None
            last = state.end()
            self._record_stream_usage(state)
            yield last
        finally:
            close = getattr(sdk_stream, "close", None)
            if callable(close):
                await close()

    def propose_update(self) -> gr.UpdateProposal | None:
        """One step of the optimiser on a copy of the state; ``self`` is left unchanged."""
        return run_optimizer(self.optimizer, self.snapshot(), self.feedback, self.complete)

    # -- telemetry ------------------------------------------------------------------------

    def genai_attributes(self) -> dict[str, Any]:
        """The GenAI identity the guard puts on its client span and duration metric."""
        state = self._state
        attributes: dict[str, Any] = {GENAI_OPERATION: "chat", GENAI_PROVIDER: state["provider"],
                                      GENAI_REQUEST_MODEL: state["model"],
                                      **request_attributes(state["params"])}
        url = urlsplit(str(self._sync.base_url))
        if url.hostname:
            attributes["server.address"] = url.hostname
            if url.port:
                attributes["server.port"] = url.port
        return attributes

    def _record_usage(self, completion: Any) -> None:
        usage = getattr(completion, "usage", None)
        response = {GENAI_RESPONSE_MODEL: getattr(completion, "model", None),
                    GENAI_RESPONSE_ID: getattr(completion, "id", None)}
        reasons = [c.finish_reason for c in getattr(completion, "choices", None) or []
                   if getattr(c, "finish_reason", None)]
        if reasons:
            response[GENAI_FINISH_REASONS] = reasons
        self._usage.record(f"chat {self._state['model']}", self.genai_attributes(),
                           input_tokens=getattr(usage, "prompt_tokens", None),
                           output_tokens=getattr(usage, "completion_tokens", None),
                           response=response)

    def _record_stream_usage(self, state: _StreamState) -> None:
        usage = state.usage or {}
        response: dict[str, Any] = {GENAI_RESPONSE_MODEL: state.model, GENAI_RESPONSE_ID: state.id}
        if state.finish_reason:
            response[GENAI_FINISH_REASONS] = [state.finish_reason]
        self._usage.record(f"chat {self._state['model']}", self.genai_attributes(),
                           input_tokens=usage.get("input_tokens"),
                           output_tokens=usage.get("output_tokens"), response=response)

    # -- self-improvement -----------------------------------------------------------------

    def record(self, input: Any, output: Any, passed: bool, note: str = "") -> None:
        """Remember a judged production answer for the optimiser (scratch memory, not state)."""
        self.feedback.add(Feedback(input, output, passed, note))

    def complete(self, system: str, user: str) -> str:
        """One call to this client's own model and parameters (no tools), for optimisers."""
        state = self._state
        completion = self._sync.chat.completions.create(
            model=state["model"], messages=_messages(system, user), **state["params"])
        answer = _output(completion)
        if isinstance(answer, str):
            return answer
        return usable_text("openai", answer.get("content"), "the message content")


_DONE = object()


async def _in_thread(iterator: Generator[gr.StreamChunk, None, None]
                     ) -> AsyncIterator[gr.StreamChunk]:
    """A sync generator consumed from a worker thread, one item per hop; closed (in a thread)
    when the consumer stops early or is cancelled, so the sync SDK stream is closed too."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            pending = loop.run_in_executor(None, next, iterator, _DONE)
            # Shielded: a cancelled consumer must not leave next() running while close() is
            # called from another thread (a generator that is executing cannot be closed).
            item = await asyncio.shield(pending)
            pending = None
            if item is _DONE:
                return
            yield item
    finally:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
        await asyncio.to_thread(iterator.close)
