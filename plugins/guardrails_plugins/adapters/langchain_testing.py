"""A prompt-sensitive LangChain fake chat model, for tests and offline examples.

LangChain's ``GenericFakeChatModel`` answers from a script whatever it is
asked; ``RuleChatModel`` (a subclass) answers with ``rule(system_prompt,
user_text) -> str``, so a gated change to the system prompt changes what the
agent says, deterministically and without a network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["RuleChatModel"]


def _text(message: BaseMessage) -> str:
    return str(message.text)


class RuleChatModel(GenericFakeChatModel):
    """A fake chat model whose answer is ``rule(system_prompt, last_user_text)``.

    Usage metadata counts words (input: every message; output: the answer).
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

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        """Accept tools (the rule never calls them), so agents with tools can be built."""
        return self.bind(**kwargs)

    @property
    def _llm_type(self) -> str:
        return "rule-fake-chat-model"
