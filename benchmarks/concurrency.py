"""Many concurrent ``ainvoke`` calls through the guard against a model with 50 ms latency.

All calls start at once (``asyncio.gather``) against an async client that
answers after ``asyncio.sleep(0.05)``. The ideal wall time is the latency,
50 ms: every call waits at the same time. Two floors are printed next to
the guarded runs: the ideal, and the bare client under the same
concurrency (asyncio's own cost of scheduling that many tasks on this
machine, which the guard cannot go below). Each setting is the median of
a few rounds, the settings alternating within each round; min and max
show the spread.

    python benchmarks/concurrency.py                       # 1,000 concurrent calls
    GUARDRAILS_BENCH_N=100 python benchmarks/concurrency.py   # short mode

Settings: the guard with an empty chain and with the ``regex`` runtime
policy on the output, with the OpenTelemetry API only (no-op spans), and
the ``regex`` guard with the SDK recording spans and metrics in memory. With
the SDK installed, the bare call inside one SDK span and one histogram point
is the SDK's own floor under the same concurrency; the SDK row is printed
against both the bare client and that floor.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import guardrails as gr
from guardrails.testing import DictClient

CALLS = int(os.environ.get("GUARDRAILS_BENCH_N", "1000"))
LATENCY = 0.050
REPEATS = 7
BARE = "bare client.ainvoke"
FLOOR = "bare + 1 SDK span, 1 metric (SDK floor)"
DENY_PATTERN = r"\b\d{3}-\d{2}-\d{4}\b"
"""The output check: block an answer that contains an SSN-like number (the fixed answer has none)."""


class SleepyClient(DictClient):
    """Answers ``"ok"`` after ``latency`` seconds: ``asyncio.sleep`` in ``ainvoke``."""

    def __init__(self, state: dict[str, Any], latency: float = LATENCY) -> None:
        super().__init__(state)
        self.latency = latency

    def invoke(self, request: gr.Request) -> Any:
        if self.latency:
            time.sleep(self.latency)
        return "ok"

    async def ainvoke(self, request: gr.Request) -> Any:
        if self.latency:
            await asyncio.sleep(self.latency)
        return "ok"


def regex_policy() -> list[Any]:
    """The ``regex`` runtime policy with one output rule, built through the plugin registry."""
    parts = gr.load_plugin("regex").build(
        {"rules": [{"name": "ssn", "pattern": DENY_PATTERN, "apply_to": ["output"]}]})
    return list(parts.middleware)


def sdk_providers() -> tuple[Any, Any] | None:
    """An SDK tracer provider and meter provider recording in memory, or ``None`` without the SDK."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return tracer_provider, MeterProvider(metric_readers=[InMemoryMetricReader()])


def sdk_floor(client: Any, request: gr.Request, providers: tuple[Any, Any]
              ) -> Callable[[], Awaitable[Any]]:
    """The bare call inside one SDK span and one histogram point: what the SDK alone costs."""
    tracer = providers[0].get_tracer("floor")
    histogram = providers[1].get_meter("floor").create_histogram("gen_ai.client.operation.duration")

    async def call() -> Any:
        with tracer.start_as_current_span("chat floor") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            output = await client.ainvoke(request)
        histogram.record(LATENCY, {"gen_ai.operation.name": "chat"})
        return output

    return call


def guarded(client: Any, middleware: Sequence[Any] = (), providers: tuple[Any, Any] | None = None,
            ) -> gr.GuardedClient:
    """``client`` behind a guard with ``middleware`` and, if given, SDK providers."""
    suite = gr.CanarySuite([gr.CanaryCase(id="ok", input="x", expect="ok")])
    tracer_provider, meter_provider = providers if providers else (None, None)
    guard = gr.Guard(gr.FrozenConstraints(), suite, middleware=middleware,
                     tracer_provider=tracer_provider, meter_provider=meter_provider)
    return guard.wrap(client)


async def wall_ms(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Milliseconds from starting ``calls`` concurrent ``call()`` to the last one finishing."""
    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(calls)))
    return (time.perf_counter() - start) * 1000


async def measure(calls_by_label: list[tuple[str, Callable[[], Awaitable[Any]]]],
                  calls: int = CALLS, repeats: int = REPEATS) -> list[tuple[str, list[float]]]:
    """Wall times of ``repeats`` rounds of ``calls`` concurrent calls per setting, after a
    small warm-up. The settings alternate within each round (bare, floor, guarded, bare,
    ...), so a burst of load from other processes touches every setting alike."""
    for _, call in calls_by_label:
        await wall_ms(call, min(calls, 50))
    walls: dict[str, list[float]] = {label: [] for label, _ in calls_by_label}
    for _ in range(repeats):
        for label, call in calls_by_label:
            walls[label].append(await wall_ms(call, calls))
    return [(label, walls[label]) for label, _ in calls_by_label]


async def run(calls: int = CALLS) -> list[tuple[str, list[float]]]:
    request = gr.Request(input="hello")
    bare = SleepyClient({"prompt": "p"})
    settings: list[tuple[str, Sequence[Any], tuple[Any, Any] | None]] = [
        ("guarded, empty chain, API only", (), None),
        ("guarded, regex policy, API only", regex_policy(), None)]
    providers = sdk_providers()
    if providers is not None:
        settings.append(("guarded, regex policy, SDK in memory", regex_policy(), providers))
    calls_by_label: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        (BARE, lambda: bare.ainvoke(request))]
    if providers is not None:
        calls_by_label.append((FLOOR, sdk_floor(bare, request, providers)))
    for label, middleware, provider_pair in settings:
        client = guarded(SleepyClient({"prompt": "p"}), middleware, provider_pair)
        calls_by_label.append((label, lambda c=client: c.ainvoke(request)))
    return await measure(calls_by_label, calls)


def main() -> None:
    rows = asyncio.run(run())
    ideal = LATENCY * 1000
    medians = {label: statistics.median(walls) for label, walls in rows}
    bare = medians[BARE]
    floor = medians.get(FLOOR)
    print(f"concurrent calls: {CALLS}, model latency {ideal:.0f} ms (the ideal wall time), "
          f"median of {REPEATS} rounds, settings alternating within each round")
    print(f"{'setting':<40} {'wall ms':>9} {'min ms':>9} {'max ms':>9} {'x ideal':>8} "
          f"{'x bare':>8} {'x floor':>8}")
    for label, walls in rows:
        median = medians[label]
        over_floor = f"{median / floor:>8.2f}" if floor and "SDK" in label else f"{'':>8}"
        print(f"{label:<40} {median:>9.1f} {min(walls):>9.1f} {max(walls):>9.1f} "
              f"{median / ideal:>8.2f} {median / bare:>8.2f} {over_floor}")
    if floor:
        print(f"SDK floor: {floor / bare:.2f}x the bare client; 'x floor' is an SDK row's wall "
              "time over the floor's (the guard's own share with the SDK recording)")


if __name__ == "__main__":
    main()
