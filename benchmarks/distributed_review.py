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
from guardrails.canary import (
    DaskBackend,
    DaskSettings,
    LocalBackend,
    RayBackend,
    RaySettings,
    run_canaries_async,
)

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


def _cases() -> tuple[list[gr.CanaryCase], list[float]]:
    rng = random.Random(0)
    truth = [rng.uniform(-1, 1) for _ in range(DIMS)]
    cases = []
    for i in range(CASES):
        x = [rng.uniform(-1, 1) for _ in range(DIMS)]
        cases.append(gr.CanaryCase(id=f"c{i}", input=x, expect=int(sum(
            w * v for w, v in zip(truth, x, strict=True)) > 0)))
    return cases, truth


def _on_dask(candidate: Any, incumbent: Any, cases: list[gr.CanaryCase], store: gr.BlobStore
             ) -> tuple[float, gr.CanaryEvidence, float]:
    """Wall seconds, evidence and the workers' CPU seconds of a run on a 2-worker LocalCluster."""
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", scheduler_port=0, dashboard_address=None,
                                  silence_logs=40) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        settings = DaskSettings(scheduler=cluster.scheduler_address,
                                build="distributed_review:build", blobs=store.url, chunk=CHUNK)
        backend = DaskBackend(settings, client=client)
        _timed(candidate, incumbent, gr.CanarySuite(cases[:20]), backend)  # warm the workers
        before = client.run(time.process_time)
        wall, evidence = _timed(candidate, incumbent, gr.CanarySuite(cases), backend)
        after = client.run(time.process_time)
    return wall, evidence, sum(after[w] - before[w] for w in after)


def _on_ray(candidate: Any, incumbent: Any, cases: list[gr.CanaryCase], store: gr.BlobStore
            ) -> tuple[float, gr.CanaryEvidence] | None:
    """Wall seconds and evidence on a local Ray of 2 CPUs (127.0.0.1, no dashboard); ``None``
    without Ray or with GUARDRAILS_BENCH_RAY=0."""
    try:
        import ray
    except ImportError:
        return None
    if os.environ.get("GUARDRAILS_BENCH_RAY") == "0":
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    context = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
                       _node_ip_address="127.0.0.1", log_to_driver=False,
                       configure_logging=False)
    try:
        backend = RayBackend(RaySettings(address=context.address_info["gcs_address"],
                                         build="distributed_review:build", blobs=store.url,
                                         chunk=CHUNK))
        _timed(candidate, incumbent, gr.CanarySuite(cases[:20]), backend)
        return _timed(candidate, incumbent, gr.CanarySuite(cases), backend)
    finally:
        ray.shutdown()


def main() -> None:
    cases, truth = _cases()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as folder:
        store = gr.FileBlobStore(folder)
        incumbent = _model(store, [w + rng.uniform(-0.2, 0.2) for w in truth])
        candidate = _model(store, [w + rng.uniform(-0.1, 0.1) for w in truth])
        local_s, local = _timed(candidate, incumbent, gr.CanarySuite(cases), LocalBackend())
        local_cpu = HOME_CPU[-1]
        dask_s, remote, worker_cpu = _on_dask(candidate, incumbent, cases, store)
        dask_home = HOME_CPU[-1]
        on_ray = _on_ray(candidate, incumbent, cases, store)
    calls = 2 * len(local.outcomes)
    overhead = dask_s / CASES - (local_s / CASES) / 2
    print(f"{'backend':<22} {'cases':>6} {'calls':>6} {'wall s':>8} {'cases/s':>8}")
    rows = [("local (1 process)", local_s), ("dask (2 workers)", dask_s)]
    if on_ray is not None:
        rows.append(("ray (2 workers)", on_ray[0]))
    for name, wall in rows:
        print(f"{name:<22} {CASES:>6} {calls:>6} {wall:>8.2f} {CASES / wall:>8.1f}")
    print(f"throughput ratio dask/local: {local_s / dask_s:.2f}x (target >= 1.7x)")
    if on_ray is not None:
        print(f"throughput ratio ray/local: {local_s / on_ray[0]:.2f}x")
    print(f"scheduler overhead per case: {overhead * 1000:.2f} ms "
          f"(local compute per case {local_s / CASES * 1000:.2f} ms)")
    print(f"CPU seconds: local run {local_cpu:.2f}; dask run: reviewing process {dask_home:.2f} "
          f"(in-process scheduler and client included), workers {worker_cpu:.2f}")
    # On an idle 2-core machine the Dask run takes about (all its CPU seconds) / 2 and the local
    # run its CPU seconds: a ratio that other load on a shared machine cannot skew.
    print(f"CPU-bound ratio dask/local on an idle 2-core machine: "
          f"{2 * local_cpu / (dask_home + worker_cpu):.2f}x (from the CPU seconds above)")
    print(f"same evidence on every backend: "
          f"{remote == local and (on_ray is None or on_ray[1] == local)}")


if __name__ == "__main__":
    main()
