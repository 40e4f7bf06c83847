"""What streaming through the guard adds: per-chunk overhead and time to the first released byte.

One zero-latency streaming client (``guardrails.testing.StreamClient``,
200 chunks of 8 characters) read bare and through a guard with one regex
policy (the SSN-like rule of the peers benchmark, ``\\b\\d{3}-\\d{2}-\\d{4}\\b``,
max_span 13). Both are measured in the same run, OpenTelemetry API only.

- per-chunk overhead = (guarded stream - bare stream) ÷ chunks, medians (target ≤ 5 µs);
- added time to the first released byte = guarded - bare time to the first chunk
  (target ≤ the time the bare stream takes to deliver max_span characters + 50 µs).

    python benchmarks/streaming.py                      # 2,000 streams per row
    GUARDRAILS_BENCH_N=50 python benchmarks/streaming.py   # short mode
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import guardrails as gr
from guardrails.testing import StreamClient

N = int(os.environ.get("GUARDRAILS_BENCH_N", "2000"))
WARMUP = max(10, N // 10)
CHUNKS = ["word 12 "] * 200
RULE = {"name": "ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b", "action": "block"}


def timed(call: Callable[[], Any]) -> float:
    """Median microseconds of ``call`` over N runs (after a warm-up, GC off)."""
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
    return statistics.median(samples) / 1000


def guarded(client: StreamClient, **telemetry: Any) -> gr.GuardedClient:
    policy = gr.load_plugin("regex").build({"rules": [RULE]}).middleware
    guard = gr.Guard(canaries=[gr.CanaryCase(id="ok", input="x", expect="ok")],
                     middleware=policy, integrity_check_every=0, **telemetry)
    return guard.wrap(client)


def sdk_row(request: gr.Request) -> float | None:
    """The guarded stream with the OpenTelemetry SDK recording (None without the SDK)."""
    try:
        from guardrails.testing import capture_telemetry

        tracer_provider, exporter, meter_provider, _ = capture_telemetry()
    except ImportError:
        return None
    guard = guarded(StreamClient(CHUNKS, {"prompt": "p"}), tracer_provider=tracer_provider,
                    meter_provider=meter_provider)

    def run() -> None:
        sum(1 for _ in guard.stream(request))
        exporter.clear()

    return timed(run)


def first(stream: Any) -> None:
    next(stream)
    stream.close()


def main() -> None:
    request = gr.Request(input="hello")
    client = StreamClient(CHUNKS, {"prompt": "p"})
    guard = guarded(client)
    (policy,) = guard.guard.stream_policies or ()
    span = policy.checks[0].max_span
    assert span is not None
    chars_per_chunk = len(CHUNKS[0])

    bare_all = timed(lambda: sum(1 for _ in client.stream(request)))
    guarded_all = timed(lambda: sum(1 for _ in guard.stream(request)))
    bare_first = timed(lambda: first(client.stream(request)))
    guarded_first = timed(lambda: first(guard.stream(request)))

    async def adrain(items: Any) -> None:
        async for _ in items:
            pass

    loop = asyncio.new_event_loop()
    abare = timed(lambda: loop.run_until_complete(adrain(client.astream(request))))
    aguarded = timed(lambda: loop.run_until_complete(adrain(guard.astream(request))))
    loop.close()

    sdk = sdk_row(request)
    per_chunk = (guarded_all - bare_all) / len(CHUNKS)
    aper_chunk = (aguarded - abare) / len(CHUNKS)
    added_first = guarded_first - bare_first
    span_time = bare_all / len(CHUNKS) * -(-span // chars_per_chunk)
    budget = span_time + 50.0
    print(f"streams per row: {N}; {len(CHUNKS)} chunks of {chars_per_chunk} characters; "
          f"one regex policy, max_span {span}")
    print(f"{'row':<46} {'median us':>10}")
    for label, value in (("bare stream, whole", bare_all), ("guarded stream, whole", guarded_all),
                         ("bare astream, whole", abare), ("guarded astream, whole", aguarded),
                         ("bare stream, first chunk", bare_first),
                         ("guarded stream, first released chunk", guarded_first)):
        print(f"{label:<46} {value:>10.2f}")
    print(f"per-chunk overhead, stream: {per_chunk:.2f} us (target <= 5 us, ratio "
          f"{per_chunk / 5.0:.2f})")
    print(f"per-chunk overhead, astream: {aper_chunk:.2f} us (ratio {aper_chunk / 5.0:.2f})")
    if sdk is not None:
        sdk_chunk = (sdk - bare_all) / len(CHUNKS)
        print(f"per-chunk overhead, stream, SDK recording spans and metrics: {sdk_chunk:.2f} us "
              f"(ratio {sdk_chunk / 5.0:.2f})")
    print(f"added time to first released byte: {added_first:.2f} us (target <= max_span of text "
          f"{span_time:.2f} us + 50 us = {budget:.2f} us, ratio {added_first / budget:.2f})")


if __name__ == "__main__":
    main()
