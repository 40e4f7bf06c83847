"""Adapter for LangChain v1 agents: a runtime-chain middleware and a gated agent client.

``GuardrailsMiddleware`` is a LangChain ``AgentMiddleware``: put it in
``create_agent(..., middleware=[GuardrailsMiddleware(policies)])`` and every
model call of the agent loop passes the guardrails runtime chain in
``wrap_model_call`` / ``awrap_model_call``. The chain sees
``Request(input=[{"role", "content"}, ...], params=model_settings)`` (the
system prompt first, when there is one) and ``Response(output=text)`` (or
``{"content", "tool_calls": [{"id", "name", "args"}]}``); what input and
output policies change (a redaction) is written back into the messages. A
``GuardrailViolation`` propagates (fail closed) unless ``on_violation="reply"``,
which answers with an ``AIMessage`` naming the policy instead.

``LangChainAgentClient`` treats an agent's configuration as gated state::

    {"system_prompt": "...", "model": "fast", "model_settings": {"temperature": 0.2},
     "tools": ["search"]}

``model`` names one of the chat models the client was given (an allow-list:
a proposal cannot bring in a model the operator did not provide), ``tools``
is the enabled subset of the tools it was given. Each state is served by its
own agent, built with ``create_agent``; proposals come from an optimiser, as
for the OpenAI adapter.

Streaming: ``LangChainAgentClient.stream`` / ``astream`` run the agent with
``stream_mode="messages"`` and yield ``guardrails.StreamChunk`` items from the
model node only: the text, reasoning and tool-call argument deltas of every
model turn of the run, in order (tool calls numbered across the run), then a
last chunk with the summed usage. Tool results and the user's own turns are
not released. With ``GuardrailsMiddleware`` in the agent, each model turn
arrives whole, after its output policies (see below).

``GuardrailsMiddleware`` holds back a model's tokens from LangGraph's
``messages`` stream (LangChain issue #35011: streaming bypasses the output
check): the model runs it wraps are tagged ``nostream``, so a caller
streaming the agent gets each model message once, as the output policies left
it, never the raw tokens before the check.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain.agents.middleware.types import ExtendedModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.constants import TAG_NOSTREAM
from opentelemetry import metrics

import guardrails as gr
from guardrails.chain import build_async_chain, build_chain, validate_middlewares

from . import require
from ._adapting import (
    GENAI_OPERATION,
    GENAI_PROVIDER,
    GENAI_REQUEST_MODEL,
    Feedback,
    FeedbackLog,
    Optimizer,
    UsageRecorder,
    request_attributes,
    run_optimizer,
    unusable,
    usable_text,
)

__all__ = ["GuardrailsMiddleware", "LangChainAgentClient"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
STATE_KEYS = ("system_prompt", "model", "model_settings", "tools")


# -- messages <-> guardrails requests ---------------------------------------------------------


def _turn(message: BaseMessage) -> dict[str, Any]:
    return {"role": _ROLES.get(message.type, message.type), "content": message.content}


def _output_of(message: AIMessage) -> Any:
    if not message.tool_calls:
        return message.content
    return {"content": message.content,
            "tool_calls": [{"id": call.get("id"), "name": call["name"], "args": call["args"]}
                           for call in message.tool_calls]}


def _with_output(message: AIMessage, output: Any) -> AIMessage:
    """``message`` carrying what the output policies left of its content and tool arguments."""
    if output == _output_of(message):
        return message
    if isinstance(output, dict) and message.tool_calls:
        calls = [{**call, "args": new.get("args", call["args"])}
                 for call, new in zip(message.tool_calls, output.get("tool_calls") or [],
                                      strict=False)]
        return message.model_copy(update={"content": output.get("content", message.content),
                                          "tool_calls": calls})
    return message.model_copy(update={"content": output, "tool_calls": []}
                              if isinstance(output, str | list) else {"content": str(output)})


def _rewritten(originals: Sequence[BaseMessage], turns: Any) -> list[BaseMessage]:
    if not isinstance(turns, list) or len(turns) != len(originals):
        raise gr.GuardrailViolation(
            "a runtime policy changed the number of messages; policies may rewrite message "
            "content but not add or drop turns", policy="guardrails.langchain")
    out = []
    for message, turn in zip(originals, turns, strict=True):
        content = turn.get("content") if isinstance(turn, dict) else turn
        out.append(message if content == message.content
                   else message.model_copy(update={"content": content}))
    return out


def _model_response(result: Any) -> ModelResponse:
    """What a handler returned, as a ``ModelResponse`` (handlers may return an ``AIMessage``)."""
    if isinstance(result, ExtendedModelResponse):
        return result.model_response
    if isinstance(result, AIMessage):
        return ModelResponse(result=[result])
    response: ModelResponse = result
    return response


# LangGraph's ``messages`` stream forwards a chat model's tokens to the caller from a callback
# while the model runs, before ``wrap_model_call`` sees the answer (LangChain issue #35011:
# streaming bypasses ``after_model``). A model run tagged ``nostream`` is skipped by that
# callback, so the caller gets the model node's output instead: the message after the output
# policies. Both the model and the run config are tagged, so a model swapped in by a middleware
# inside this one is held back too.


def _unstreamed(model: BaseChatModel) -> BaseChatModel:
    """``model`` tagged ``nostream`` (its tokens are not forwarded to a ``messages`` stream)."""
    tags = list(model.tags or [])
    if TAG_NOSTREAM in tags:
        return model
    return model.model_copy(update={"tags": [*tags, TAG_NOSTREAM]})


@contextmanager
def _tokens_held() -> Iterator[None]:
    """Tag every model run started inside the block ``nostream`` through the run config."""
    config = var_child_runnable_config.get()
    if config is None:
        yield
        return
    token = var_child_runnable_config.set(
        {**config, "tags": [*(config.get("tags") or []), TAG_NOSTREAM]})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)


class GuardrailsMiddleware(AgentMiddleware):
    """Run the guardrails runtime chain around every model call of a LangChain agent.

    ``middleware``: guardrails runtime middlewares (plugins' ``parts.middleware``,
    or your own ``(request, call_next)`` callables), first outermost.
    ``version``: what ``Response.version`` says (a served version id, if any).
    ``on_violation``: ``"raise"`` (default) lets ``GuardrailViolation`` end the
    agent run; ``"reply"`` answers with ``AIMessage(refusal)`` and the policy's
    name in ``response_metadata["guardrails.blocked_by"]``.
    """

    def __init__(self, middleware: Sequence[Any] = (), *, version: str = "",
                 on_violation: Literal["raise", "reply"] = "raise",
                 refusal: str = "I can't help with that.") -> None:
        super().__init__()
        if on_violation not in ("raise", "reply"):
            raise gr.ConfigError(f"on_violation {on_violation!r}: use 'raise' or 'reply'")
        self.policies = validate_middlewares(middleware)
        self.version = version
        self.on_violation = on_violation
        self.refusal = refusal

    @classmethod
    def from_guard(cls, guard: gr.Guard, **options: Any) -> GuardrailsMiddleware:
        """The middleware running ``guard``'s runtime policies."""
        return cls(guard.middleware, **options)

    @property
    def name(self) -> str:
        return "GuardrailsMiddleware"

    def _request(self, request: ModelRequest) -> tuple[gr.Request, list[BaseMessage]]:
        originals: list[BaseMessage] = list(request.messages)
        if request.system_message is not None:
            originals.insert(0, request.system_message)
        model = getattr(request.model, "model_name", None) or getattr(request.model, "model", None)
        return gr.Request(input=[_turn(m) for m in originals],
                          params=dict(request.model_settings),
                          metadata={"langchain.model": str(model or request.model._llm_type)},
                          ), originals

    def _apply(self, request: ModelRequest, originals: list[BaseMessage],
               inner: gr.Request) -> ModelRequest:
        messages: list[Any] = _rewritten(originals, inner.input)
        model = _unstreamed(request.model)
        if request.system_message is not None:
            system, messages = messages[0], messages[1:]
            return request.override(system_message=system, messages=messages,
                                    model_settings=dict(inner.params), model=model)
        return request.override(messages=messages, model_settings=dict(inner.params), model=model)

    def _response(self, result: Any, box: list[Any]) -> gr.Response:
        box.append(result)
        ai = next((m for m in _model_response(result).result if isinstance(m, AIMessage)), None)
        return gr.Response(output=_usable_output(ai), version=self.version)

    @staticmethod
    def _result(response: gr.Response, box: list[Any]) -> Any:
        raw = box[-1]  # the model call the response came from (the last, after retries)
        result = _model_response(raw)
        messages = [_with_output(m, response.output) if isinstance(m, AIMessage) else m
                    for m in result.result]
        rebuilt = ModelResponse(result=messages, structured_response=result.structured_response)
        if isinstance(raw, ExtendedModelResponse):
            return ExtendedModelResponse(model_response=rebuilt, command=raw.command)
        return rebuilt

    def _refuse(self, exc: gr.GuardrailViolation) -> ModelResponse:
        if self.on_violation == "raise":
            raise exc
        return ModelResponse(result=[AIMessage(content=self.refusal, response_metadata={
            "guardrails.blocked_by": exc.policy})])

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]
                        ) -> Any:
        incoming, originals = self._request(request)
        box: list[Any] = []

        def endpoint(inner: gr.Request) -> gr.Response:
            with _tokens_held():
                return self._response(handler(self._apply(request, originals, inner)), box)

        try:
            return self._result(build_chain(self.policies, endpoint)(incoming), box)
        except gr.GuardrailViolation as exc:
            return self._refuse(exc)

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Any]
                               ) -> Any:
        incoming, originals = self._request(request)
        box: list[Any] = []

        async def endpoint(inner: gr.Request) -> gr.Response:
            with _tokens_held():
                return self._response(await handler(self._apply(request, originals, inner)),
                                      box)

        try:
            return self._result(await build_async_chain(self.policies, endpoint)(incoming), box)
        except gr.GuardrailViolation as exc:
            return self._refuse(exc)


class _GatedSettings(AgentMiddleware):
    """Applies the state's ``model_settings`` to every model call (they win over the agent's)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__()
        self.settings = dict(settings)

    @property
    def name(self) -> str:
        return "GuardrailsGatedSettings"

    def wrap_model_call(self, request: ModelRequest, handler: Any) -> Any:
        return handler(request.override(model_settings={**request.model_settings, **self.settings}))

    async def awrap_model_call(self, request: ModelRequest, handler: Any) -> Any:
        return await handler(request.override(
            model_settings={**request.model_settings, **self.settings}))


def _model_name(model: BaseChatModel) -> str:
    for attribute in ("model_name", "model", "model_id"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return str(model._llm_type)


def _tool_name(tool: Any) -> str:
    name = getattr(tool, "name", None) or getattr(tool, "__name__", None)
    if not isinstance(name, str) or not name:
        raise gr.ConfigError(f"tool {tool!r} has no name; give tools a 'name' (BaseTool) or "
                             "use named functions")
    return name


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(m, Mapping) and "role" in m for m in value):
        if any(m["role"] in ("system", "developer") for m in value):
            raise ValueError("a request may not carry a system message: the system prompt is "
                             "gated state")
        return [dict(m) for m in value]
    raise ValueError("a LangChain agent request input is a string (one user message) or a list "
                     f"of {{'role', 'content'}} messages; got {type(value).__name__}")


def _refused(message: AIMessage) -> bool:
    """Whether the model declined through a refusal field or block rather than in text."""
    if message.additional_kwargs.get("refusal"):
        return True
    content = message.content if isinstance(message.content, list) else []
    return any(isinstance(block, Mapping) and block.get("type") == "refusal" for block in content)


def _usable_output(message: AIMessage | None) -> Any:
    """A model call's answer for the runtime chain; ``UnusableResponseError`` when there is
    none (no AIMessage, a refusal, neither text nor a tool call), as the agent adapter does:
    an empty output is not an answer, so it never passes the chain as one."""
    if message is None:
        raise unusable("langchain", "no_answer", "the model call returned no AIMessage")
    if _refused(message):
        raise unusable("langchain", "refusal",
                       "the model refused (a refusal field or block), no text was returned")
    if not message.tool_calls:
        usable_text("langchain", str(message.text), "the AIMessage's text")
    return _output_of(message)


def _usable_answer(result: Any, messages: Sequence[Any]) -> str:
    """The text of the agent's last message; ``UnusableResponseError`` when the run ended
    without one (no messages, a last message that is not the model's, a refusal, no text)."""
    if not isinstance(result, Mapping):
        raise unusable("langchain", "wrong_schema",
                       f"the agent returned a {type(result).__name__}, not its state")
    if not messages:
        raise unusable("langchain", "no_answer", "the agent's run holds no messages")
    last = messages[-1]
    if not isinstance(last, AIMessage):
        raise unusable("langchain", "wrong_type",
                       f"the agent's last message is a {type(last).__name__}, not an AIMessage")
    if _refused(last):
        raise unusable("langchain", "refusal",
                       "the model refused (a refusal field or block), no text was returned")
    return usable_text("langchain", str(last.text), "the last AIMessage's text")


_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


@dataclass
class _Turns:
    """What an agent's ``messages`` stream has shown: the model turns, by message id."""

    ids: list[str] = field(default_factory=list)
    """Model turns seen, in order (a message id per turn)."""
    calls: dict[tuple[str, int], int] = field(default_factory=dict)
    """(turn, index in the turn) -> index across the run."""
    text: list[str] = field(default_factory=list)
    """The text of the last model turn."""
    ended_on_tool: bool = False
    """Whether a tool result came after the last model turn (a ``return_direct`` tool)."""
    usage: dict[str, int] = field(default_factory=dict)

    def read(self, event: Any) -> gr.StreamChunk | None:
        message, metadata = event
        node = metadata.get("langgraph_node") if isinstance(metadata, Mapping) else None
        if isinstance(message, ToolMessage):
            self.ended_on_tool = True
        if node != "model" or not isinstance(message, AIMessage):
            return None
        self.ended_on_tool = False
        turn = message.id or f"turn-{len(self.ids)}"
        if turn in self.ids and not isinstance(message, AIMessageChunk):
            return None  # the whole message after its streamed chunks: already read
        if turn not in self.ids:
            self.ids.append(turn)
            self.text = []
        if _refused(message):
            raise unusable("langchain", "refusal",
                           "the model refused (a refusal field or block), no text was returned")
        for key, value in (message.usage_metadata or {}).items():
            if key in _USAGE_KEYS and isinstance(value, int):
                self.usage[key] = self.usage.get(key, 0) + value
        text = str(message.text)
        self.text.append(text)
        reasoning = _reasoning(message)
        calls = self._calls(turn, message)
        if text or reasoning or calls:
            return gr.StreamChunk(text=text, reasoning=reasoning, tool_calls=calls)
        return None

    def _calls(self, turn: str, message: AIMessage) -> tuple[gr.ToolCallDelta, ...]:
        if isinstance(message, AIMessageChunk):
            parts = [(c.get("index"), c.get("id"), c.get("name"), c.get("args") or "")
                     for c in message.tool_call_chunks]
        else:
            # Unescaped: a policy scanning the arguments sees "Köln", not "K\\u00f6ln".
            parts = [(i, c.get("id"), c.get("name"),
                      json.dumps(c.get("args", {}), ensure_ascii=False))
                     for i, c in enumerate(message.tool_calls)]
        out = []
        for position, (index, call_id, name, args) in enumerate(parts):
            key = (turn, index if isinstance(index, int) else position)
            number = self.calls.setdefault(key, len(self.calls))
            out.append(gr.ToolCallDelta(index=number, id=call_id, name=name, arguments=str(args)))
        return tuple(out)

    def check(self) -> None:
        """``UnusableResponseError`` unless the run ended on a model turn with usable text."""
        if not self.ids:
            raise unusable("langchain", "no_answer", "the agent's run streamed no model message")
        if self.ended_on_tool:
            raise unusable("langchain", "wrong_type", "the agent's run ended on a tool result, "
                                                      "not on a model turn")
        usable_text("langchain", "".join(self.text), "the last model turn's text")


def _reasoning(message: AIMessage) -> str:
    """Reasoning deltas: ``reasoning`` content blocks, or ``reasoning_content`` kwargs."""
    parts = [str(block.get("reasoning", "")) for block in
             (message.content if isinstance(message.content, list) else [])
             if isinstance(block, Mapping) and block.get("type") == "reasoning"]
    extra = message.additional_kwargs.get("reasoning_content")
    return "".join(parts) + (extra if isinstance(extra, str) else "")


class LangChainAgentClient:
    """A LangChain v1 agent whose prompt, model choice, settings and tools are gated state.

    ``model``: one chat model, or a mapping name -> chat model (the models a
    state may choose from). ``model_name``: the state's initial choice
    (default: the single model's name). ``tools``: every tool the agent may
    be given; ``enabled_tools`` the initial subset (default: all).
    ``middleware``: LangChain middleware added to every agent built (for
    example ``GuardrailsMiddleware``). ``optimizer``: proposes new states
    (see ``guardrails_plugins.adapters._adapting.SelfRewritePrompt``).

    ``invoke(request)``: ``request.input`` is a string or a list of
    ``{"role", "content"}`` turns; returns the text of the agent's last message.
    A run that ends without usable text (no messages, a last message that is
    not an ``AIMessage``, a refusal, empty or blank text) raises
    ``guardrails.UnusableResponseError``.
    """

    def __init__(self, model: BaseChatModel | Mapping[str, BaseChatModel], *,
                 system_prompt: str = "", model_name: str | None = None,
                 model_settings: Mapping[str, Any] | None = None, tools: Sequence[Any] = (),
                 enabled_tools: Sequence[str] | None = None,
                 middleware: Sequence[AgentMiddleware] = (),
                 optimizer: Optimizer | None = None,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        if isinstance(model, Mapping):
            if not model:
                raise gr.ConfigError("give at least one chat model")
            for candidate in model.values():
                require(candidate, "langchain")
            models = dict(model)
        else:
            require(model, "langchain")
            models = {model_name or _model_name(model): model}
        self._models = models
        self._tools = {_tool_name(tool): tool for tool in tools}
        self._middleware = tuple(middleware)
        self.optimizer = optimizer
        self.feedback = FeedbackLog()
        self._usage = UsageRecorder(meter_provider)
        state = {"system_prompt": system_prompt,
                 "model": model_name or next(iter(models)),
                 "model_settings": dict(model_settings or {}),
                 "tools": list(self._tools) if enabled_tools is None else list(enabled_tools)}
        self._state = self._validate(state)
        self._agent = self._build()

    def _validate(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(state, Mapping) or set(state) != set(STATE_KEYS):
            keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"a LangChain agent state has exactly the keys "
                             f"{', '.join(STATE_KEYS)}; got {keys}")
        if not isinstance(state["system_prompt"], str):
            raise ValueError("state 'system_prompt' must be a string")
        if state["model"] not in self._models:
            raise ValueError(f"state 'model' {state['model']!r} is not one of the models this "
                             f"client was given ({', '.join(sorted(self._models))})")
        if not isinstance(state["model_settings"], Mapping):
            raise ValueError("state 'model_settings' must be an object")
        tools = state["tools"]
        if not isinstance(tools, list) or len(set(map(str, tools))) != len(tools):
            raise ValueError("state 'tools' must be a list of distinct tool names")
        unknown = [t for t in tools if t not in self._tools]
        if unknown:
            raise ValueError(f"state 'tools' names tools this client was not given: "
                             f"{', '.join(map(str, unknown))}")
        gr.canonical_json(state)
        return copy.deepcopy(dict(state))

    def _build(self) -> Any:
        state = self._state
        middleware = [_GatedSettings(state["model_settings"]), *self._middleware]
        return create_agent(model=self._models[state["model"]],
                            tools=[self._tools[name] for name in state["tools"]],
                            system_prompt=state["system_prompt"] or None, middleware=middleware)

    # -- the protocol -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self._state)

    def with_state(self, state: dict[str, Any]) -> LangChainAgentClient:
        """A new client (and agent) on ``state``; ``self`` and its agent are untouched."""
        clone = object.__new__(LangChainAgentClient)
        clone._models, clone._tools, clone._middleware = self._models, self._tools, self._middleware
        clone.optimizer = self.optimizer
        clone.feedback = FeedbackLog()
        clone._usage = self._usage
        clone._state = self._validate(state)
        clone._agent = clone._build()
        return clone

    @property
    def agent(self) -> Any:
        """The compiled agent serving this state (do not mutate it)."""
        return self._agent

    def invoke(self, request: gr.Request) -> Any:
        result = self._agent.invoke({"messages": _messages(request.input)})
        return self._answer(result)

    async def ainvoke(self, request: gr.Request) -> Any:
        result = await self._agent.ainvoke({"messages": _messages(request.input)})
        return self._answer(result)

    def stream(self, request: gr.Request) -> Iterator[gr.StreamChunk]:
        """The run's model output as ``StreamChunk`` items (see the module docstring), the last
        one with usage and ``finish_reason="stop"``.

        Closing the generator closes the agent's stream (the run stops). A run whose last
        model turn has no usable text (a refusal, blank text, a last message that is not the
        model's) raises ``UnusableResponseError`` after what was streamed.
        """
        run = self._agent.stream({"messages": _messages(request.input)}, stream_mode="messages")
        turns = _Turns()
        try:
            for event in run:
                item = turns.read(event)
                if item is not None:
                    yield item
            yield self._stream_end(turns)
        finally:
            run.close()

    async def astream(self, request: gr.Request) -> AsyncIterator[gr.StreamChunk]:
        """``stream`` through the agent's ``astream``; ``aclose()`` closes the agent's stream."""
        run = self._agent.astream({"messages": _messages(request.input)},
                                  stream_mode="messages")
        turns = _Turns()
        try:
            async for event in run:
                item = turns.read(event)
                if item is not None:
                    yield item
            yield self._stream_end(turns)
        finally:
            await run.aclose()

    def _stream_end(self, turns: _Turns) -> gr.StreamChunk:
        turns.check()
        usage = turns.usage or None
        if usage:
            self._usage.record(f"invoke_agent {self._state['model']}", self.genai_attributes(),
                               input_tokens=usage.get("input_tokens"),
                               output_tokens=usage.get("output_tokens"))
        return gr.StreamChunk(usage=usage, finish_reason="stop")

    def _answer(self, result: Mapping[str, Any]) -> Any:
        messages = list(result.get("messages", [])) if isinstance(result, Mapping) else []
        produced = [m for m in messages if isinstance(m, AIMessage)]
        self._record_usage(produced)
        return _usable_answer(result, messages)

    def propose_update(self) -> gr.UpdateProposal | None:
        """One optimiser step on a copy of the state; ``self`` is left unchanged."""
        return run_optimizer(self.optimizer, self.snapshot(), self.feedback, self.complete)

    # -- telemetry ------------------------------------------------------------------------

    def genai_attributes(self) -> dict[str, Any]:
        model = self._models[self._state["model"]]
        return {GENAI_OPERATION: "invoke_agent", GENAI_PROVIDER: str(model._llm_type),
                GENAI_REQUEST_MODEL: self._state["model"],
                **request_attributes(self._state["model_settings"])}

    def _record_usage(self, produced: Sequence[AIMessage]) -> None:
        usages = [m.usage_metadata for m in produced if m.usage_metadata]
        if not usages:
            return
        self._usage.record(f"invoke_agent {self._state['model']}", self.genai_attributes(),
                           input_tokens=sum(u.get("input_tokens", 0) for u in usages),
                           output_tokens=sum(u.get("output_tokens", 0) for u in usages))

    # -- self-improvement -----------------------------------------------------------------

    def record(self, input: Any, output: Any, passed: bool, note: str = "") -> None:
        """Remember a judged production answer for the optimiser (scratch memory, not state)."""
        self.feedback.add(Feedback(input, output, passed, note))

    def complete(self, system: str, user: str) -> str:
        """One call to the state's chat model with its settings (no tools), for optimisers."""
        model = self._models[self._state["model"]]
        reply = model.invoke([SystemMessage(content=system), HumanMessage(content=user)],
                             **self._state["model_settings"])
        return _usable_answer({"messages": [reply]}, [reply])
