"""Fake LangChain chat models, for tests and offline examples.

LangChain's ``GenericFakeChatModel`` answers from a script whatever it is
asked; ``RuleChatModel`` (a subclass) answers with ``rule(system_prompt,
user_text) -> str``, so a gated change to the system prompt changes what the
agent says, deterministically and without a network. ``ScriptedChatModel``
(a subclass too) streams its scripted messages the way a provider's chat model
does: text in pieces, tool calls as ``tool_call_chunks`` with their arguments
in pieces, reasoning as content blocks, usage on the last chunk (the parent
streams text only and drops tool calls, so an agent streamed on it never
calls a tool).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

__all__ = ["RuleChatModel", "ScriptedChatModel"]


def _text(message: BaseMessage) -> str:
    return str(message.text)


class RuleChatModel(GenericFakeChatModel):
    """A fake chat model whose answer is ``rule(system_prompt, last_user_text)``.

    Usage metadata counts words (input: every message; output: the answer).
    Streamed, the answer comes in pieces of 4 characters, usage on the last.
    """

    rule: Callable[[str, str], str]
    messages: Iterator[AIMessage | str] = iter(())
    model_name: str = "rule-model"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                  ) -> ChatResult:
        system = "\n\n".join(_text(m) for m in messages if m.type == "system")
        user = next((_text(m) for m in reversed(messages) if m.type == "human"), "")
        answer = self.rule(system, user)
        words_in = sum(len(_text(m).split()) for m in messages)
        words_out = len(answer.split())
        message = AIMessage(content=answer, usage_metadata={
            "input_tokens": words_in, "output_tokens": words_out,
            "total_tokens": words_in + words_out})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop=stop, run_manager=run_manager,
                                 **kwargs).generations[0].message
        yield from _streamed(message, 4, run_manager)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Accept tools (the rule never calls them), so agents with tools can be built."""
        return self.bind(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "rule-fake-chat-model"


class ScriptedChatModel(GenericFakeChatModel):
    """``GenericFakeChatModel`` whose stream carries everything a scripted message has.

    ``messages``: the script, one ``AIMessage`` (or text) per model call.
    ``piece``: characters per streamed text or argument piece. A message's
    ``reasoning`` (``additional_kwargs["reasoning"]``) streams first, as a
    ``reasoning`` content block.
    """

    piece: int = 4
    model_name: str = "scripted-model"

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any
                ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop=stop, run_manager=run_manager,
                                 **kwargs).generations[0].message
        yield from _streamed(message, self.piece, run_manager)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Accept tools (the script decides which it calls)."""
        return self.bind(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake-chat-model"


def _streamed(message: BaseMessage, size: int, run_manager: CallbackManagerForLLMRun | None
              ) -> Iterator[ChatGenerationChunk]:
    if not isinstance(message, AIMessage):
        raise TypeError(f"a fake chat model answered a {type(message).__name__}, not an AIMessage")
    for chunk in _chunks(message, size):
        generation = ChatGenerationChunk(message=chunk)
        if run_manager:
            run_manager.on_llm_new_token(str(chunk.text), chunk=generation)
        yield generation


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def _chunks(message: AIMessage, size: int) -> list[AIMessageChunk]:
    out = []
    reasoning = message.additional_kwargs.get("reasoning")
    if isinstance(reasoning, str):
        out += [AIMessageChunk(content=[{"type": "reasoning", "reasoning": piece}], id=message.id)
                for piece in _pieces(reasoning, size)]
    text = message.content if isinstance(message.content, str) else str(message.text)
    out += [AIMessageChunk(content=piece, id=message.id)
            for piece in re.findall(rf".{{1,{size}}}", text, flags=re.S)]
    for index, call in enumerate(message.tool_calls):
        args = _pieces(json.dumps(call["args"], ensure_ascii=False), size) or [""]
        out.append(AIMessageChunk(content="", id=message.id, tool_call_chunks=[
            {"name": call["name"], "args": args[0], "id": call.get("id"), "index": index}]))
        out += [AIMessageChunk(content="", id=message.id, tool_call_chunks=[
            {"name": None, "args": part, "id": None, "index": index}]) for part in args[1:]]
    refusal = message.additional_kwargs.get("refusal")
    if refusal:
        out.append(AIMessageChunk(content="", id=message.id,
                                  additional_kwargs={"refusal": refusal}))
    last = out[-1] if out else AIMessageChunk(content="", id=message.id)
    usage = message.usage_metadata or {"input_tokens": 1, "output_tokens": len(text.split()),
                                       "total_tokens": 1 + len(text.split())}
    out[-1:] = [last.model_copy(update={"usage_metadata": usage, "chunk_position": "last"})]
    return out
