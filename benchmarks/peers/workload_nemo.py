"""The shared workload against NeMo Guardrails: a Python action in an output rail.

Runs in its own venv. The model implements NeMo Guardrails' ``LLMModel``
protocol and answers ``"ok"`` at once; the configuration has no dialog
rails and one output rail, a Colang subflow that executes a registered
Python action and refuses the answer when it fails. Sync:
``LLMRails.generate``; async: ``generate_async``. Usage statistics are off
(``NEMO_GUARDRAILS_NO_USAGE_STATS=1``, ``DO_NOT_TRACK=1``); no embedding
model is needed by this configuration, and the Hugging Face hub is set
offline in case one were.

The raw call is the model's own ``generate_async``; the sync row drives it
without an event loop (it never suspends), the async row awaits it.

    python workload_nemo.py percall | concurrency
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import version
from typing import Any

import _bench
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.types import LLMResponse

DENY = re.compile(_bench.DENY_PATTERN)
MESSAGES = [{"role": "user", "content": _bench.USER_TEXT}]

YAML = """
models: []
rails:
  output:
    flows:
      - check no ssn
"""

COLANG = """
define subflow check no ssn
  $passed = execute check_no_ssn
  if not $passed
    bot refuse to respond
    stop
"""


class FixedModel:
    """An ``LLMModel`` answering ``"ok"`` after ``latency`` seconds (``asyncio.sleep``)."""

    model_name = "fixed"
    provider_name = "bench"
    provider_url = None

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls = 0

    async def generate_async(self, prompt: Any, *, stop: Any = None, **kwargs: Any) -> LLMResponse:
        self.calls += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        return LLMResponse(content=_bench.FIXED_OUTPUT)

    async def stream_async(self, prompt: Any, *, stop: Any = None, **kwargs: Any) -> Any:
        yield await self.generate_async(prompt, stop=stop, **kwargs)


async def check_no_ssn(context: dict[str, Any] | None = None) -> bool:
    """The output rail's action: passes unless the bot message contains an SSN-like number."""
    return DENY.search((context or {}).get("bot_message") or "") is None


def make_rails(model: FixedModel) -> LLMRails:
    rails = LLMRails(RailsConfig.from_content(colang_content=COLANG, yaml_content=YAML), llm=model)
    rails.register_action(check_no_ssn, name="check_no_ssn")
    return rails


def _check(answer: Any, model: FixedModel, before: int) -> None:
    if answer.get("content") != _bench.FIXED_OUTPUT:
        raise SystemExit(f"the guarded call answered {answer!r}")
    if model.calls != before + 1:
        raise SystemExit(f"one generation called the model {model.calls - before} times, not once")


def percall() -> dict[str, Any]:
    model = FixedModel()
    rails = make_rails(model)
    _check(rails.generate(messages=MESSAGES), model, 0)
    sync = _bench.compare(lambda: _bench.drive(model.generate_async(_bench.USER_TEXT)),
                          lambda: rails.generate(messages=MESSAGES))

    async def run_async() -> dict[str, Any]:
        before = model.calls
        _check(await rails.generate_async(messages=MESSAGES), model, before)
        return await _bench.acompare(lambda: model.generate_async(_bench.USER_TEXT),
                                     lambda: rails.generate_async(messages=MESSAGES))

    return {"rows": [{"setting": "", "mode": "sync", **sync},
                     {"setting": "", "mode": "async", **asyncio.run(run_async())}]}


def concurrency() -> dict[str, Any]:
    model = FixedModel(latency=_bench.LATENCY)
    rails = make_rails(model)
    result = asyncio.run(_bench.concurrency(lambda: model.generate_async(_bench.USER_TEXT),
                                            lambda: rails.generate_async(messages=MESSAGES)))
    return {"rows": [{"setting": "", **result}]}


if __name__ == "__main__":
    chosen = _bench.mode()
    result = percall() if chosen == "percall" else concurrency()
    _bench.emit({"framework": "NeMo Guardrails", "version": version("nemoguardrails"), **result})
