"""Canary evaluation on a Dask cluster: a real ``distributed.LocalCluster`` started by the test.

Workers build each side from its state and the shared blob store (SeaweedFS S3 on
127.0.0.1), return outputs only, and the reviewing process judges them: the decision
equals the local one for the same seed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dask_clients import WeightsClient

import guardrails as gr
from guardrails._threads import run_sync
from guardrails.blobs import FileBlobStore, S3BlobStore
from guardrails.canary import (
    DaskBackend,
    DaskSettings,
    LocalBackend,
    RunSettings,
    run_canaries_async,
)
from guardrails.testing import DictClient

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """Two single-threaded worker processes and a scheduler, all on 127.0.0.1, no dashboard.

    The in-process scheduler's INFO lines carry tracebacks; formatting them in its IO thread
    while the main thread parses a module trips CPython 3.11's shared AST recursion counter
    ("AST constructor recursion depth mismatch"), so this process logs only its errors.
    """
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", scheduler_port=0,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        quiet.setLevel(level)


def _scheduler_tasks(client: Any) -> int:
    return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))


def _cases(n: int, dims: int = 6, seed: int = 1) -> list[gr.CanaryCase]:
    """Capability cases labelled by a fixed hyperplane, and two safety cases the candidate
    (bias 0.01, so 1 at the origin) passes."""
    rng = random.Random(seed)
    truth = [rng.uniform(-1, 1) for _ in range(dims)]
    cases = []
    for i in range(n):
        x = [round(rng.uniform(-1, 1), 3) for _ in range(dims)]
        label = 1 if sum(w * v for w, v in zip(truth, x, strict=True)) > 0 else 0
        cases.append(gr.CanaryCase(id=f"c{i}", input=x, expect=label, hidden=i % 5 == 0))
    for i in range(2):
        cases.append(gr.CanaryCase(id=f"s{i}", input=[0.0] * dims, expect=1, tags=("safety",)))
    return cases, truth  # type: ignore[return-value]


@pytest.fixture
def shared(s3_endpoint: str, s3_url: str) -> S3BlobStore:
    return S3BlobStore(s3_url, endpoint=s3_endpoint)


def _pair(store: Any, truth: list[float], noise: float) -> tuple[WeightsClient, WeightsClient]:
    rng = random.Random(7)
    incumbent = WeightsClient.create([w + rng.uniform(-0.3, 0.3) for w in truth], 0.0, store)
    candidate = WeightsClient.create([w + rng.uniform(-noise, noise) for w in truth], 0.01, store)
    return candidate, incumbent


def _settings(store: S3BlobStore, dask_client: Any, build: str = "dask_clients:build_weights"
              ) -> DaskSettings:
    return DaskSettings(scheduler=dask_client.scheduler.address, build=build, blobs=store.url,
                        blob_options={"endpoint": store.endpoint})


async def _run(candidate: Any, incumbent: Any, suite: gr.CanarySuite, backend: Any,
               interim: Any = None, timeout: float = 10.0, seed: int = 42) -> gr.CanaryEvidence:
    return await run_canaries_async(candidate, incumbent, suite, case_timeout=timeout,
                                    settings=RunSettings(batch_size=16), seed=seed,
                                    interim=interim, backend=backend)


def test_a_dask_decision_equals_the_local_one(dask_client: Any, shared: S3BlobStore) -> None:
    """Same seed, same outputs: the evidence, verdict, cases used and statistic are identical."""
    cases, truth = _cases(200)
    suite = gr.CanarySuite(cases)
    candidate, incumbent = _pair(shared, truth, noise=0.2)
    rule = gr.SequentialRule.for_suite(suite, margin=0.1)
    local = run_sync(_run(candidate, incumbent, suite, LocalBackend(), rule.interim))
    backend = DaskBackend(_settings(shared, dask_client), client=dask_client)
    remote = run_sync(_run(candidate, incumbent, suite, backend, rule.interim))
    assert remote == local
    (verdict_l, findings_l), (verdict_r, findings_r) = rule(local), rule(remote)
    assert verdict_r == verdict_l
    assert [f.model_dump() for f in findings_r] == [f.model_dump() for f in findings_l]
    assert remote.stopped_early and len(remote.outcomes) < len(cases)
    assert remote.stop_reason.startswith("sequential")  # the rule stopped it, not a failure


def test_nothing_is_left_on_the_cluster_after_an_early_stop(dask_client: Any,
                                                            shared: S3BlobStore) -> None:
    """Once the sequential rule stops a run, no task or scattered state stays on the scheduler."""
    cases, truth = _cases(200)
    suite = gr.CanarySuite(cases)
    candidate, incumbent = _pair(shared, truth, noise=0.2)
    rule = gr.SequentialRule.for_suite(suite, margin=0.1)
    backend = DaskBackend(_settings(shared, dask_client), client=dask_client)
    evidence = run_sync(_run(candidate, incumbent, suite, backend, rule.interim))
    assert evidence.stopped_early
    deadline = time.monotonic() + 10
    while _scheduler_tasks(dask_client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _scheduler_tasks(dask_client) == 0


def test_the_workers_build_the_clients(dask_client: Any, shared: S3BlobStore) -> None:
    """Each side is built on a worker from its state and the shared store, not shipped built."""
    cases, truth = _cases(20)
    candidate, incumbent = _pair(shared, truth, noise=0.1)
    backend = DaskBackend(_settings(shared, dask_client), client=dask_client)
    run_sync(_run(candidate, incumbent, gr.CanarySuite(cases), backend))

    def built() -> list[str]:
        from guardrails.canary import _backends

        return [version for _, _, version in _backends._BUILT]

    versions = {v for per_worker in dask_client.run(built).values() for v in per_worker}
    assert gr.state_version(candidate.snapshot()) in versions
    assert gr.state_version(incumbent.snapshot()) in versions


def test_a_corrupted_weight_blob_fails_the_candidate(dask_client: Any, shared: S3BlobStore,
                                                     s3_endpoint: str) -> None:
    """A worker reading altered weights from the store fails every call: never accepted."""
    import s3_server

    cases, truth = _cases(20)
    candidate, incumbent = _pair(shared, truth, noise=0.1)
    digest = candidate.snapshot()["weights"]["$blob"]
    s3_server.client(s3_endpoint).put_object(Bucket=shared.bucket,
                                             Key=shared.prefix + digest.split(":")[1], Body=b"[0]")
    backend = DaskBackend(_settings(shared, dask_client), client=dask_client)
    evidence = run_sync(_run(candidate, incumbent, gr.CanarySuite(cases), backend))
    assert not any(o.candidate_answered for o in evidence.outcomes)
    assert evidence.stopped_early  # at the first safety case: never accepted
    assert all("BlobIntegrityError" in str(o.candidate_error) for o in evidence.outcomes)


def test_a_client_that_lies_about_its_state_fails(dask_client: Any, tmp_path: Path) -> None:
    """A build that serves another state than the one given fails every call on the workers."""
    store = FileBlobStore(tmp_path / "blobs")
    client = DictClient({"answers": {"a": "1"}, "default": "?"})
    cases = [gr.CanaryCase(id="a", input="a", expect="1")]
    settings = DaskSettings(scheduler=dask_client.scheduler.address, build="dask_clients:build_liar",
                            blobs=store.url)
    evidence = run_sync(_run(client, client, gr.CanarySuite(cases),
                                DaskBackend(settings, client=dask_client)))
    assert evidence.outcomes[0].candidate_error == "client raised ValueError"


def test_a_timed_out_call_is_cancelled_on_the_cluster(dask_client: Any, tmp_path: Path) -> None:
    """A call past its timeout counts as a failure and leaves no task behind on the scheduler."""
    store = FileBlobStore(tmp_path / "blobs")
    candidate = WeightsClient.create([1.0], 0.0, store, sleep=3)
    incumbent = WeightsClient.create([1.0], 0.0, store, sleep=0)
    cases = [gr.CanaryCase(id="hang", input="sleep", expect=0),
             gr.CanaryCase(id="ok", input=[1.0], expect=1)]
    settings = DaskSettings(scheduler=dask_client.scheduler.address,
                            build="dask_clients:build_weights", blobs=store.url)
    evidence = run_sync(_run(candidate, incumbent, gr.CanarySuite(cases),
                             DaskBackend(settings, client=dask_client), timeout=1.0))
    hang = next(o for o in evidence.outcomes if o.case_id == "hang")
    assert not hang.candidate_passed and "timeout" in str(hang.candidate_error)
    deadline = time.monotonic() + 10
    while _scheduler_tasks(dask_client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _scheduler_tasks(dask_client) == 0


def test_an_unreachable_scheduler_is_a_config_error(tmp_path: Path) -> None:
    """A scheduler address nobody listens on fails the run with a message naming it."""
    settings = DaskSettings(scheduler="tcp://127.0.0.1:9", build="dask_clients:build_dict",
                            blobs=str(tmp_path), connect_timeout=1)
    client = DictClient({"default": "x"})
    with pytest.raises(gr.ConfigError, match=r"tcp://127\.0\.0\.1:9"):
        run_sync(_run(client, client, gr.CanarySuite([gr.CanaryCase(id="a", input="a",
                                                                       expect="x")]),
                         DaskBackend(settings)))


def test_dask_settings_refuse_a_malformed_build() -> None:
    """build must be 'package.module:callable'."""
    with pytest.raises(ValueError, match=r"package\.module:callable"):
        DaskSettings(scheduler="tcp://127.0.0.1:8786", build="nocolon", blobs="x")


def test_a_guard_reviews_on_the_cluster_with_the_local_decision(dask_client: Any,
                                                                tmp_path: Path) -> None:
    """Through the whole update path, a guard whose RunSettings name a cluster decides as the
    local guard does for the same seed: same verdict, same findings."""
    store = FileBlobStore(tmp_path / "blobs")
    state = {"answers": {f"q{i}": f"a{i}" for i in range(50)}, "default": "?"}
    cases = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}") for i in range(50)]
    cases.append(gr.CanaryCase(id="s", input="q0", expect="a0", tags=("safety",)))
    patch = {"op": "replace", "path": "/answers/q3", "value": "wrong"}
    settings = RunSettings(dask=DaskSettings(scheduler=dask_client.scheduler.address,
                                             build="dask_clients:build_dict", blobs=store.url))

    def decide(run: RunSettings | None) -> gr.Decision:
        client = DictClient(state)
        guard = gr.Guard(canaries=cases, seed=5, blob_store=store, canary_run=run,
                         decision_rule=gr.SequentialRule(margin=0.1, safety_cases=1))
        guarded = guard.wrap(client)
        client.queue(patch)
        decision = guarded.self_improve()
        assert decision is not None
        return decision

    local, remote = decide(None), decide(settings)
    assert remote.verdict == local.verdict

    def comparable(decision: gr.Decision) -> list[Any]:
        return [(f.check, f.passed, f.message) for f in decision.findings]

    assert comparable(remote) == comparable(local)

    def built() -> list[str]:
        from guardrails.canary import _backends

        return [version for _, _, version in _backends._BUILT]

    assert remote.candidate in {v for vs in dask_client.run(built).values() for v in vs}
