"""benchmarks/streaming.py's workload through NeMo Guardrails' streaming output rails.

Runs in the NeMo Guardrails venv (``run.py --streaming``). The model is a
local fake implementing ``LLMModel.stream_async``: 200 chunks of
``"word 12 "`` (8 characters), no network, nothing awaited between chunks.
The output rail is the same one regular expression (``_bench.DENY_PATTERN``)
as a registered Python action returning a ``RailOutcome``, run by NeMo's
streaming output rails (``rails.output.streaming.enabled``, ``stream_first:
False`` so that no chunk is released before the rail checked it, with
``chunk_size`` 32 and ``context_size`` 16 tokens). Measured: the median of
whole streams drained and of the time to the first released chunk, bare
(the model's own ``stream_async``) and through ``LLMRails.stream_async``.

    python workload_nemo_streaming.py
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from importlib.metadata import version
from typing import Any

import _bench
from nemoguardrails import LLMRails, RailsConfig
from nemoguardrails.actions.rail_outcome import RailOutcome
from nemoguardrails.types import LLMResponse, LLMResponseChunk

CHUNKS = ["word 12 "] * 200
DENY = re.compile(_bench.DENY_PATTERN)
MESSAGES = [{"role": "user", "content": _bench.USER_TEXT}]
STREAMS = max(20, _bench.N // 50)

YAML = """
models: []
streaming: True
rails:
  output:
    flows:
      - check no ssn
    streaming:
      enabled: True
      chunk_size: 32
      context_size: 16
      stream_first: False
"""

COLANG = """
define subflow check no ssn
  $passed = execute check_no_ssn
  if not $passed
    bot refuse to respond
    stop
"""


class StreamingModel:
    """An ``LLMModel`` streaming ``CHUNKS`` at once."""

    model_name = "fixed"
    provider_name = "bench"
    provider_url = None

    async def generate_async(self, prompt: Any, *, stop: Any = None, **kwargs: Any) -> LLMResponse:
        return LLMResponse(content="".join(CHUNKS))

    async def stream_async(self, prompt: Any, *, stop: Any = None, **kwargs: Any) -> Any:
        for chunk in CHUNKS:
            yield LLMResponseChunk(delta_content=chunk)


async def check_no_ssn(context: dict[str, Any] | None = None, **_: Any) -> RailOutcome:
    text = (context or {}).get("bot_message") or ""
    return RailOutcome.allow() if DENY.search(text) is None else RailOutcome.block(reason="ssn")


async def drain(stream: Any, first_only: bool = False) -> str:
    parts = []
    async for item in stream:
        parts.append(item if isinstance(item, str) else (item.delta_content or ""))
        if first_only:
            break
    return "".join(parts)


async def timed(make: Any, first_only: bool) -> float:
    started = time.perf_counter_ns()
    stream = make()
    await drain(stream, first_only)
    elapsed = time.perf_counter_ns() - started
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
    return elapsed / 1000


async def main() -> dict[str, Any]:
    model = StreamingModel()
    rails = LLMRails(RailsConfig.from_content(colang_content=COLANG, yaml_content=YAML), llm=model)
    rails.register_action(check_no_ssn, name="check_no_ssn")
    answer = await drain(rails.stream_async(messages=MESSAGES))
    if answer.replace(" ", "") != "".join(CHUNKS).replace(" ", ""):
        raise SystemExit(f"the guarded stream released {answer[:200]!r}")
    bare = lambda: model.stream_async(_bench.USER_TEXT)  # noqa: E731
    guarded = lambda: rails.stream_async(messages=MESSAGES)  # noqa: E731
    rows: dict[str, list[float]] = {k: [] for k in ("bare", "guarded", "bare_first",
                                                    "guarded_first")}
    for _ in range(STREAMS):  # interleaved, so load drifts hit both alike
        rows["bare"].append(await timed(bare, False))
        rows["guarded"].append(await timed(guarded, False))
        rows["bare_first"].append(await timed(bare, True))
        rows["guarded_first"].append(await timed(guarded, True))
    medians = {k: statistics.median(v) for k, v in rows.items()}
    return {"streams": STREAMS, "chunks": len(CHUNKS), "chars_per_chunk": len(CHUNKS[0]),
            "joined_exactly": answer == "".join(CHUNKS), "median_us": medians,
            "per_chunk_us": (medians["guarded"] - medians["bare"]) / len(CHUNKS),
            "added_first_us": medians["guarded_first"] - medians["bare_first"]}


if __name__ == "__main__":
    _bench.emit({"framework": "NeMo Guardrails", "version": version("nemoguardrails"),
                 **asyncio.run(main())})
