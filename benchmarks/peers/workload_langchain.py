"""The shared workload against LangChain v1 agents: one ``after_model`` middleware.

Runs in its own venv. The model is a ``BaseChatModel`` subclass answering
``AIMessage("ok")`` at once; the agent is ``create_agent`` with no tools and
one ``AgentMiddleware`` whose ``after_model`` (and ``aafter_model``) checks
the last message and raises to block it. Sync: ``agent.invoke``; async:
``agent.ainvoke``. The raw call is the chat model's own ``invoke`` /
``ainvoke``. LangSmith tracing is off (``LANGSMITH_TRACING=false``,
``LANGCHAIN_TRACING_V2=false``).

    python workload_langchain.py percall | concurrency
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from typing import Any

import _bench
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

DENY = re.compile(_bench.DENY_PATTERN)


class FixedChatModel(BaseChatModel):
    """Answers ``AIMessage("ok")``; ``latency`` seconds of ``asyncio.sleep`` on the async path."""

    latency: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "fixed"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(_bench.FIXED_OUTPUT))])

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                         **kwargs: Any) -> ChatResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._generate(messages, stop)


class BlockSSN(AgentMiddleware):  # type: ignore[type-arg]
    """Blocks a model answer that contains an SSN-like number."""

    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        if DENY.search(str(state["messages"][-1].content)):
            raise ValueError("the output contains an SSN-like number")
        return None

    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return self.after_model(state, runtime)


def _inputs() -> dict[str, Any]:
    return {"messages": [HumanMessage(_bench.USER_TEXT)]}


def _check(result: Any) -> None:
    if result["messages"][-1].content != _bench.FIXED_OUTPUT:
        raise SystemExit(f"the guarded call answered {result['messages'][-1]!r}")


def percall() -> dict[str, Any]:
    model = FixedChatModel()
    agent = create_agent(model=model, tools=[], middleware=[BlockSSN()])
    prompt = [HumanMessage(_bench.USER_TEXT)]
    _check(agent.invoke(_inputs()))
    sync = _bench.compare(lambda: model.invoke(prompt), lambda: agent.invoke(_inputs()))

    async def run_async() -> dict[str, Any]:
        _check(await agent.ainvoke(_inputs()))
        return await _bench.acompare(lambda: model.ainvoke(prompt),
                                     lambda: agent.ainvoke(_inputs()))

    return {"rows": [{"setting": "", "mode": "sync", **sync},
                     {"setting": "", "mode": "async", **asyncio.run(run_async())}]}


def concurrency() -> dict[str, Any]:
    model = FixedChatModel(latency=_bench.LATENCY)
    agent = create_agent(model=model, tools=[], middleware=[BlockSSN()])
    prompt = [HumanMessage(_bench.USER_TEXT)]
    result = asyncio.run(_bench.concurrency(lambda: model.ainvoke(prompt),
                                            lambda: agent.ainvoke(_inputs())))
    return {"rows": [{"setting": "", **result}]}


if __name__ == "__main__":
    chosen = _bench.mode()
    result = percall() if chosen == "percall" else concurrency()
    _bench.emit({"framework": "LangChain agents", "version": version("langchain"), **result})
