"""Timing helpers shared by every workload (standard library only: they run in each peer's venv).

Each workload script times the same thing the same way: a warm-up, then
``N`` calls of the raw model and ``N`` calls through the guard, interleaved
in rounds so that a change of machine load hits both alike. The garbage
collector stays on (it is part of what a framework's allocations cost) and
is run to completion before each measurement.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

N = int(os.environ.get("GUARDRAILS_BENCH_N", "5000"))
WARMUP = max(20, N // 10)
ROUNDS = max(1, min(10, N // 200))
CONCURRENCY = int(os.environ.get("GUARDRAILS_BENCH_CONCURRENCY", "1000"))
LATENCY = 0.050
"""Seconds of model latency in the concurrency workload."""
CONCURRENCY_REPEATS = 3

FIXED_OUTPUT = "ok"
USER_TEXT = "hello"
DENY_PATTERN = r"\b\d{3}-\d{2}-\d{4}\b"
"""The one output check: block an answer containing an SSN-like number (the fixed answer has none)."""


def _summary(samples: list[int]) -> dict[str, float]:
    samples = sorted(samples)
    return {"median_us": statistics.median(samples) / 1000,
            "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
            "calls": len(samples)}


def compare(raw: Callable[[], Any], guarded: Callable[[], Any]) -> dict[str, dict[str, float]]:
    """Median and p99 (microseconds) of ``raw()`` and ``guarded()``, measured in alternating rounds."""
    for _ in range(WARMUP):
        raw()
        guarded()
    per_round = max(1, N // ROUNDS)
    samples: dict[str, list[int]] = {"raw": [], "guarded": []}
    clock = time.perf_counter_ns
    for _ in range(ROUNDS):
        for key, call in (("raw", raw), ("guarded", guarded)):
            gc.collect()
            out = samples[key]
            for _ in range(per_round):
                start = clock()
                call()
                out.append(clock() - start)
    return {key: _summary(values) for key, values in samples.items()}


async def acompare(raw: Callable[[], Awaitable[Any]],
                   guarded: Callable[[], Awaitable[Any]]) -> dict[str, dict[str, float]]:
    """The async twin of ``compare``: sequential awaits on one running event loop."""
    for _ in range(WARMUP):
        await raw()
        await guarded()
    per_round = max(1, N // ROUNDS)
    samples: dict[str, list[int]] = {"raw": [], "guarded": []}
    clock = time.perf_counter_ns
    for _ in range(ROUNDS):
        for key, call in (("raw", raw), ("guarded", guarded)):
            gc.collect()
            out = samples[key]
            for _ in range(per_round):
                start = clock()
                await call()
                out.append(clock() - start)
    return {key: _summary(values) for key, values in samples.items()}


def drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends to completion without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the coroutine suspended; drive() is only for ones that do not")


async def _wall(make_call: Callable[[], Awaitable[Any]], calls: int) -> float:
    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(make_call() for _ in range(calls)))
    return (time.perf_counter() - start) * 1000


async def concurrency(raw: Callable[[], Awaitable[Any]], guarded: Callable[[], Awaitable[Any]],
                      calls: int = CONCURRENCY) -> dict[str, float]:
    """Wall time (ms) of ``calls`` concurrent raw and guarded calls; median of a few repeats."""
    await _wall(raw, min(calls, 50))
    await _wall(guarded, min(calls, 50))
    raw_walls, guarded_walls = [], []
    for _ in range(CONCURRENCY_REPEATS):
        raw_walls.append(await _wall(raw, calls))
        guarded_walls.append(await _wall(guarded, calls))
    return {"calls": calls, "latency_ms": LATENCY * 1000, "ideal_ms": LATENCY * 1000,
            "raw_wall_ms": statistics.median(raw_walls),
            "guarded_wall_ms": statistics.median(guarded_walls)}


def emit(result: dict[str, Any]) -> None:
    """The workload's one line of output: JSON the orchestrator reads."""
    sys.stdout.write("BENCH-RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def mode() -> str:
    """``percall`` or ``concurrency``, from the command line."""
    chosen = sys.argv[1] if len(sys.argv) > 1 else "percall"
    if chosen not in ("percall", "concurrency"):
        raise SystemExit(f"usage: {sys.argv[0]} [percall|concurrency]")
    return chosen
