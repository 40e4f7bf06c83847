"""Wall time of one review: 500 paired cases against a client with 50 ms latency.

The ideal is calls / concurrency x latency (1,000 calls at concurrency 64:
0.78 s). Prints the measured time and its ratio to the ideal (target: within
1.10x, issue 22), and the CPU time the reviewing thread (the event loop and
the gate) spent per call: on a loaded machine the wall time is noise, this
column much less so. Short mode: GUARDRAILS_BENCH_N=100 runs 100 cases.

    python benchmarks/review_walltime.py
"""

from __future__ import annotations

import os
import time
from typing import Any

import guardrails as gr
from guardrails.testing import DictClient

CASES = int(os.environ.get("GUARDRAILS_BENCH_N", "500"))
LATENCY = 0.05
CONCURRENCY = 64


class Remote(DictClient):
    """A model behind a network: every answer takes 50 ms."""

    def invoke(self, request: gr.Request) -> Any:
        time.sleep(LATENCY)
        return super().invoke(request)

    def with_state(self, state: dict[str, Any]) -> Remote:
        return Remote(state, self.responder)


def main() -> None:
    cases = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}") for i in range(CASES)]
    state = {"answers": {f"q{i}": f"a{i}" for i in range(CASES)}, "v": 0}
    print(f"{'rule':<24} {'cases':>6} {'calls':>6} {'wall s':>8} {'ideal s':>8} {'ratio':>6} "
          f"{'cpu/call us':>12}")
    rules: list[tuple[str, Any, int]] = [("margin (one batch)", None, 32)]
    rules += [(f"sequential, batch {b}", gr.SequentialRule(margin=0.05, design="sequential",
                                                           safety_cases=0), b) for b in (64, 128)]
    for label, rule, batch_size in rules:
        guard = gr.Guard(gr.FrozenConstraints(), cases, case_timeout=5, decision_rule=rule,
                         canary_run=gr.RunSettings(concurrency=CONCURRENCY, batch_size=batch_size,
                                                   smoke_cases=0))
        guarded = guard.wrap(Remote(state))
        started, cpu = time.perf_counter(), time.thread_time()
        decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
            {"op": "replace", "path": "/v", "value": 1}]))
        wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
        assert decision.accepted, decision.reasons
        run = next(f for f in decision.findings if f.check == "canary_run")
        calls = 2 * run.evidence["cases_run"]
        ideal = calls / CONCURRENCY * LATENCY
        print(f"{label:<24} {run.evidence['cases_run']:>6} {calls:>6} {wall:>8.2f} {ideal:>8.2f} "
              f"{wall / ideal:>6.2f} {cpu / calls * 1e6:>12.1f}")


if __name__ == "__main__":
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    main()
