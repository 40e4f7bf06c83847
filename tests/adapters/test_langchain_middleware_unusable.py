"""GuardrailsMiddleware: a model call that answers nothing usable raises
``UnusableResponseError`` (as the agent adapter does); it never passes the chain as ``''``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from guardrails_plugins.adapters.langchain import GuardrailsMiddleware
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

import guardrails as gr


class _Scripted(GenericFakeChatModel):
    """LangChain's scripted fake chat model, accepting tools (it never looks at them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def _run(messages: list[AIMessage], mode: str, tools: list[Any] | None = None) -> list[Any]:
    model = _Scripted(messages=iter(messages))
    agent = create_agent(model=model, tools=tools or [], middleware=[GuardrailsMiddleware()])
    payload = {"messages": [{"role": "user", "content": "hello"}]}
    if mode == "sync":
        return list(agent.invoke(payload)["messages"])
    return list(asyncio.run(agent.ainvoke(payload))["messages"])


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("content", ["", "   \n"])
def test_an_empty_model_message_raises_instead_of_passing(mode: str, content: str) -> None:
    """Empty or blank text with no tool call: the agent run ends with the typed error."""
    with pytest.raises(gr.UnusableResponseError) as raised:
        _run([AIMessage(content=content)], mode)
    assert raised.value.reason == "empty_content"
    assert raised.value.adapter == "langchain"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refusal_object_raises_as_a_refusal(mode: str) -> None:
    """A refusal field where text was expected is no answer either."""
    refusal = AIMessage(content="", additional_kwargs={"refusal": "I won't"})
    with pytest.raises(gr.UnusableResponseError) as raised:
        _run([refusal], mode)
    assert raised.value.reason == "refusal"


@tool
def lookup(term: str) -> str:
    """Look a term up."""
    return f"{term}: found"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tool_call_with_no_text_is_an_answer(mode: str) -> None:
    """A turn that only calls a tool has no text, and that is fine: the agent goes on."""
    call = AIMessage(content="", tool_calls=[{"id": "1", "name": "lookup",
                                              "args": {"term": "x"}}])
    messages = _run([call, AIMessage(content="done")], mode, tools=[lookup])
    assert messages[-1].content == "done"
