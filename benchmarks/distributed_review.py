"""Canary throughput on a Dask cluster against the local runner: a CPU-bound local model.

A linear model in pure Python (no NumPy: the GIL keeps the local backend on one core, as a
scikit-learn or torch model evaluated from Python threads often is) answers 2,000 paired
cases. The local backend runs every call in this process; the Dask backend runs them on a
``LocalCluster`` of 2 single-threaded worker processes started here on 127.0.0.1, the
workers building each side from its state and a blob store. Prints the throughput of each,
their ratio (target: Dask with 2 workers >= 1.7x local) and the scheduler overhead per case
(Dask wall time per case beyond half the local compute per case). Short mode:
GUARDRAILS_BENCH_N=200 runs 200 cases.

    python benchmarks/distributed_review.py
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from typing import Any

import guardrails as gr
from guardrails._threads import run_sync
from guardrails.canary import DaskBackend, DaskSettings, LocalBackend, run_canaries_async

CASES = int(os.environ.get("GUARDRAILS_BENCH_N", "2000"))
DIMS = 64
WORK = int(os.environ.get("GUARDRAILS_BENCH_WORK", "600"))
"""Passes of the dot product per call: about 10 ms of CPU per call on this machine."""
CONCURRENCY = int(os.environ.get("GUARDRAILS_BENCH_CONCURRENCY", "128"))
CHUNK = int(os.environ.get("GUARDRAILS_BENCH_CHUNK", "32"))
"""Calls per Dask task (``DaskSettings.chunk``)."""


class LinearModel:
    """``sign(w . x)`` computed WORK times over: CPU-bound, weights in a blob."""

    def __init__(self, state: dict[str, Any], blobs: gr.BlobStore) -> None:
        self._state = json.loads(json.dumps(state))
        self.weights = json.loads(blobs.get(state["weights"]["$blob"]))

    def invoke(self, request: gr.Request) -> int:
        total = 0.0
        for _ in range(WORK):
            total = sum(w * x for w, x in zip(self.weights, request.input, strict=True))
        return 1 if total > 0 else 0

    def snapshot(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._state))


HOME_CPU: list[float] = []
"""CPU seconds the reviewing process spent in each timed run (scheduler included: in-process)."""


def build(state: dict[str, Any], blobs: gr.BlobStore) -> LinearModel:
    return LinearModel(state, blobs)


def _model(store: gr.BlobStore, weights: list[float]) -> LinearModel:
    return LinearModel({"weights": gr.blob_ref(store.put(json.dumps(weights).encode()))}, store)


def _timed(candidate: Any, incumbent: Any, suite: gr.CanarySuite, backend: Any
           ) -> tuple[float, gr.CanaryEvidence]:
    settings = gr.RunSettings(concurrency=CONCURRENCY, batch_size=64)
    start, cpu = time.perf_counter(), time.process_time()
    evidence = run_sync(run_canaries_async(candidate, incumbent, suite, case_timeout=60.0,
                                           settings=settings, seed=1, backend=backend))
    wall = time.perf_counter() - start
    HOME_CPU.append(time.process_time() - cpu)
    return wall, evidence


def main() -> None:
    import distributed

    rng = random.Random(0)
    truth = [rng.uniform(-1, 1) for _ in range(DIMS)]
    cases = []
    for i in range(CASES):
        x = [rng.uniform(-1, 1) for _ in range(DIMS)]
        cases.append(gr.CanaryCase(id=f"c{i}", input=x, expect=int(sum(
            w * v for w, v in zip(truth, x, strict=True)) > 0)))
    suite = gr.CanarySuite(cases)
    with tempfile.TemporaryDirectory() as folder:
        store = gr.FileBlobStore(folder)
        incumbent = _model(store, [w + rng.uniform(-0.2, 0.2) for w in truth])
        candidate = _model(store, [w + rng.uniform(-0.1, 0.1) for w in truth])
        local_s, local = _timed(candidate, incumbent, suite, LocalBackend())
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", scheduler_port=0, dashboard_address=None,
                                      silence_logs=40) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            settings = DaskSettings(scheduler=cluster.scheduler_address,
                                    build="distributed_review:build", blobs=store.url,
                                    chunk=CHUNK)
            backend = DaskBackend(settings, client=client)
            _timed(candidate, incumbent, gr.CanarySuite(cases[:20]), backend)  # warm the workers
            dask_s, remote = _timed(candidate, incumbent, suite, backend)
    calls = 2 * len(local.outcomes)
    overhead = dask_s / CASES - (local_s / CASES) / 2
    print(f"{'backend':<22} {'cases':>6} {'calls':>6} {'wall s':>8} {'cases/s':>8}")
    print(f"{'local (1 process)':<22} {CASES:>6} {calls:>6} {local_s:>8.2f} {CASES / local_s:>8.1f}")
    print(f"{'dask (2 workers)':<22} {CASES:>6} {calls:>6} {dask_s:>8.2f} {CASES / dask_s:>8.1f}")
    print(f"throughput ratio dask/local: {local_s / dask_s:.2f}x (target >= 1.7x)")
    print(f"scheduler overhead per case: {overhead * 1000:.2f} ms "
          f"(local compute per case {local_s / CASES * 1000:.2f} ms)")
    print(f"reviewing process CPU: local {HOME_CPU[0]:.2f} s, dask {HOME_CPU[-1]:.2f} s "
          f"(the in-process scheduler and client included)")
    print(f"same evidence on both backends: {remote == local}")


if __name__ == "__main__":
    main()
