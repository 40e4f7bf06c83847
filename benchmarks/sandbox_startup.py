"""Start-up of the process sandbox per review: warm (forked from a template) against cold.

Each row starts a sandbox for one candidate (load the client, build the
candidate, first answer) and closes it, N times, and prints the median and
the 90th percentile. ``warm`` forks a jailed child from the pre-started
template; ``cold`` starts a fresh interpreter for the same strict jail (what
every review paid before the warm start); ``cold, no jail`` is the old
resource-only sandbox. Then a whole small review, inline against warm
process sandbox. Target: warm median <= 50 ms; the ratio cold / warm is
printed from the same run. Short mode: GUARDRAILS_BENCH_N=5.

    python benchmarks/sandbox_startup.py
"""

from __future__ import annotations

import os
import statistics
import time

import guardrails as gr
from guardrails.sandbox import ProcessSandbox
from guardrails.testing import DictClient

RUNS = int(os.environ.get("GUARDRAILS_BENCH_N", "30"))
STATE = {"answers": {"2+2": "4", "capital of France": "Paris"}, "default": "?"}


def start_times(policy: gr.JailPolicy) -> list[float]:
    """Seconds from ``start`` to the candidate's first answer, per run."""
    sandbox = ProcessSandbox(gr.SandboxLimits(jail=policy))
    client = DictClient(STATE)
    sandbox.check_client(client)  # a guard does this at wrap(): the template starts then
    if policy.warm:
        sandbox.start(client, STATE).close()  # the template has finished importing
    times = []
    for run in range(RUNS):
        started = time.perf_counter()
        proxy = sandbox.start(client, {**STATE, "run": run})
        proxy.invoke(gr.Request(input="2+2"))
        times.append(time.perf_counter() - started)
        proxy.close()
    sandbox.close()
    return times


def review_time(sandbox: str) -> float:
    cases = [gr.CanaryCase(id="sum", input="2+2", expect="4"),
             gr.CanaryCase(id="capital", input="capital of France", expect={"contains": "Paris"})]
    guard = gr.Guard(canaries=cases, sandbox=sandbox,  # type: ignore[arg-type]
                     canary_run=gr.RunSettings(smoke_cases=0), seed=1)
    guarded = guard.wrap(DictClient(STATE))
    times = []
    for run in range(max(3, RUNS // 3)):
        started = time.perf_counter()
        guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
            {"op": "add", "path": f"/note{run}", "value": run}]))
        times.append(time.perf_counter() - started)
    if guard.process_sandbox is not None:
        guard.process_sandbox.close()
    return statistics.median(times)


def row(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    p90 = sorted(times)[max(0, int(len(times) * 0.9) - 1)]
    print(f"{label:<28} {len(times):>5} {median * 1000:>10.1f} {p90 * 1000:>10.1f}")
    return median


def main() -> None:
    print(f"{'sandbox start-up':<28} {'runs':>5} {'median ms':>10} {'p90 ms':>10}")
    warm = row("warm, strict jail", start_times(gr.JailPolicy()))
    cold = row("cold, strict jail", start_times(gr.JailPolicy(warm=False)))
    row("cold, no jail (isolation=off)", start_times(gr.JailPolicy(isolation="off", warm=False)))
    print(f"cold / warm: {cold / warm:.1f}x; warm median {warm * 1000:.1f} ms "
          f"({'meets' if warm <= 0.05 else 'misses'} the 50 ms target)")
    inline, process = review_time("inline"), review_time("process")
    print(f"review of 2 cases, median: inline {inline * 1000:.1f} ms, "
          f"process (warm, strict) {process * 1000:.1f} ms")


if __name__ == "__main__":
    main()
