"""Per-call cost of GuardedClient.invoke over a zero-latency client.

Prints median and p99 in microseconds for the bare client and for the
guard with an empty chain and with three trivial middlewares, once with the
OpenTelemetry API alone (no SDK: no-op spans) and with the SDK recording
spans and metrics (spans to an in-memory exporter, synchronously and through
a batch processor). The guard's cost is the difference
from the bare call measured in the same run.

    python benchmarks/overhead.py            # 20,000 calls per row
    GUARDRAILS_BENCH_N=500 python benchmarks/overhead.py   # short mode
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import guardrails as gr
from guardrails.testing import DictClient

N = int(os.environ.get("GUARDRAILS_BENCH_N", "20000"))
WARMUP = max(100, N // 10)


def passthrough(request: gr.Request, call_next: Callable[[gr.Request], gr.Response]) -> gr.Response:
    return call_next(request)


class ZeroLatency(DictClient):
    """Answers at once with a fixed string."""

    def invoke(self, request: gr.Request) -> Any:
        return "ok"


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    for _ in range(WARMUP):
        call()
    samples = []
    gc.disable()
    try:
        for _ in range(N):
            start = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - start)
    finally:
        gc.enable()
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


def guarded(middleware: tuple[Any, ...], tracer_provider: Any = None,
            meter_provider: Any = None) -> gr.GuardedClient:
    suite = gr.CanarySuite([gr.CanaryCase(id="ok", input="x", expect="ok")])
    guard = gr.Guard(gr.FrozenConstraints(), suite, middleware=middleware,
                     tracer_provider=tracer_provider, meter_provider=meter_provider)
    return guard.wrap(ZeroLatency({"prompt": "p"}))


def main() -> None:
    request = gr.Request(input="hello")
    client = ZeroLatency({"prompt": "p"})
    raw_median, raw_p99 = timed(lambda: client.invoke(request))
    rows = [("bare client.invoke", raw_median, raw_p99)]
    settings: list[tuple[str, Any, Any]] = [("API only", None, None)]
    exporters = []
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        for label, processor in (("SDK, in-memory exporter", SimpleSpanProcessor),
                                 ("SDK, batch exporter", BatchSpanProcessor)):
            provider = TracerProvider()
            exporter = InMemorySpanExporter()
            exporters.append(exporter)
            provider.add_span_processor(processor(exporter))
            meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
            settings.append((label, provider, meters))
    except ImportError:
        pass  # the SDK is a test dependency; API-only rows still run
    for label, provider, meters in settings:
        for chain_label, chain in (("empty chain", ()), ("3 middlewares", (passthrough,) * 3)):
            guarded_client = guarded(chain, provider, meters)
            median, p99 = timed(lambda g=guarded_client: g.invoke(request))
            rows.append((f"guarded, {chain_label}, {label}", median, p99))
            for exporter in exporters:
                exporter.clear()
    print(f"calls per row: {N}")
    print(f"{'setting':<48} {'median us':>10} {'p99 us':>10} {'added us':>10}")
    for label, median, p99 in rows:
        print(f"{label:<48} {median:>10.2f} {p99:>10.2f} {median - raw_median:>10.2f}")
    assignment_rows()


def assignment_rows() -> None:
    """What a rollout adds per call to pick the arm (issue 17: at most 1 us): the sticky hash
    of a returning user (one dict lookup), of a new user (a salted BLAKE2b), and of a call
    without a key (a coin flip). 'added us' is over an empty call measured the same way (over
    taking the next request, for rows that take a fresh one). The floor is the salted
    BLAKE2b of the key alone (copy, update, digest): what any sticky keyed hash pays."""
    import hashlib

    from guardrails.rollout import Assigner

    assigner = Assigner("5a" * 16, 5.0, ("user_id", "session_id"))
    salted = hashlib.blake2b(digest_size=8, key=bytes.fromhex("5a" * 16)).copy

    def hash_alone(metadata: dict[str, str]) -> bytes:
        h = salted()
        h.update(metadata["user_id"].encode())
        return h.digest()

    def users() -> Any:
        return iter([{"user_id": f"user-{i}"} for i in range(N + WARMUP)])

    returning = {"user_id": "user-42"}
    fresh, new_users, floor_users = users(), users(), users()
    empty_median, _ = timed(lambda: None)
    baseline_next, _ = timed(lambda: next(new_users))
    cases = [("rollout assignment, returning user", lambda: assigner.to_candidate(returning)),
             ("rollout assignment, new user (hash)",
              lambda: assigner.to_candidate(next(fresh))),
             ("floor: salted BLAKE2b of a new key alone", lambda: hash_alone(next(floor_users))),
             ("rollout assignment, no key (coin flip)", lambda: assigner.to_candidate({}))]
    added: dict[str, float] = {}
    for label, call in cases:
        median, p99 = timed(call)
        base = baseline_next if ("new" in label) else empty_median
        added[label] = median - base
        print(f"{label:<48} {median:>10.2f} {p99:>10.2f} {median - base:>10.2f}")
    floor = added["floor: salted BLAKE2b of a new key alone"]
    if floor > 0:
        print(f"new user / floor: {added['rollout assignment, new user (hash)'] / floor:.2f}x")


if __name__ == "__main__":
    main()
