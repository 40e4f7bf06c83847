"""Canary evaluation on a Ray cluster: a real local Ray started by the test.

Run by tests/test_ray_backend.py inside a private network namespace (Ray 2.60 listens on
every interface whatever node address it is given; there only loopback exists).

The same guarantees as the Dask backend: workers build each side from its state and the
shared blob store (SeaweedFS S3 on 127.0.0.1), return outputs only, the reviewing process
judges them, and the decision equals the local one for the same seed. Slow (Ray takes
seconds to start), never skipped where Ray is installed (the dev extra installs it).
"""

from __future__ import annotations

import os
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dask_clients import WeightsClient

import guardrails as gr
from guardrails._threads import run_sync
from guardrails.blobs import FileBlobStore, S3BlobStore
from guardrails.canary import LocalBackend, RayBackend, RaySettings, RunSettings, run_canaries_async
from guardrails.testing import DictClient

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """Ray on this host, 2 CPUs, no dashboard, a small object store; shut down after.

    The workers import the test clients from tests/ (PYTHONPATH, inherited from this process).
    """
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), saved]))
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 << 20,
                           _node_ip_address="127.0.0.1", log_to_driver=False,
                           configure_logging=False)
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# These two run before the module's cluster starts: a process already connected to Ray
# reviews on that connection and never dials the address.
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_an_unreachable_cluster_is_a_config_error_naming_it(address: str, tmp_path: Path) -> None:
    assert not ray.is_initialized()
    address = address.format(port=_closed_port())
    client = DictClient({"default": "x"})
    backend = RayBackend(RaySettings(address=address, build="dask_clients:build_dict",
                                     blobs=str(tmp_path), connect_timeout=1))
    with pytest.raises(gr.ConfigError, match=re.escape(address)):
        _run(client, client, gr.CanarySuite([gr.CanaryCase(id="a", input="a", expect="x")]),
             backend)
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["nowhere", "127.0.0.1:notaport", "ray://:10001"])
def test_a_malformed_address_is_a_config_error(address: str, tmp_path: Path) -> None:
    client = DictClient({"default": "x"})
    backend = RayBackend(RaySettings(address=address, build="dask_clients:build_dict",
                                     blobs=str(tmp_path)))
    with pytest.raises(gr.ConfigError, match="not HOST:PORT"):
        _run(client, client, gr.CanarySuite([gr.CanaryCase(id="a", input="a", expect="x")]),
             backend)


def _cases(n: int, dims: int = 6, seed: int = 1) -> tuple[list[gr.CanaryCase], list[float]]:
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
    return cases, truth


def _pair(store: Any, truth: list[float], noise: float, **extra: Any
          ) -> tuple[WeightsClient, WeightsClient]:
    rng = random.Random(7)
    incumbent = WeightsClient.create([w + rng.uniform(-0.3, 0.3) for w in truth], 0.0, store)
    candidate = WeightsClient.create([w + rng.uniform(-noise, noise) for w in truth], 0.01,
                                     store, **extra)
    return candidate, incumbent


def _backend(address: str, store: Any, build: str = "dask_clients:build_weights",
             **options: Any) -> RayBackend:
    blob_options = {"endpoint": store.endpoint} if isinstance(store, S3BlobStore) else {}
    return RayBackend(RaySettings(address=address, build=build, blobs=store.url,
                                  blob_options=blob_options, **options))


def _run(candidate: Any, incumbent: Any, suite: gr.CanarySuite, backend: Any,
         interim: Any = None, timeout: float = 20.0) -> gr.CanaryEvidence:
    return run_sync(run_canaries_async(candidate, incumbent, suite, case_timeout=timeout,
                                       settings=RunSettings(batch_size=16), seed=42,
                                       interim=interim, backend=backend))


def _idle(within: float = 20.0) -> bool:
    """Whether every CPU of the cluster is free again (no task left running or queued)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) == ray.cluster_resources().get("CPU"):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def shared(s3_endpoint: str, s3_url: str) -> S3BlobStore:
    return S3BlobStore(s3_url, endpoint=s3_endpoint)


def test_a_ray_decision_equals_the_local_one(ray_cluster: str, shared: S3BlobStore) -> None:
    """Same seed, same outputs: the evidence, verdict, cases used and statistic are identical."""
    cases, truth = _cases(200)
    suite = gr.CanarySuite(cases)
    candidate, incumbent = _pair(shared, truth, noise=0.2)
    rule = gr.SequentialRule.for_suite(suite, margin=0.1)
    local = _run(candidate, incumbent, suite, LocalBackend(), rule.interim)
    remote = _run(candidate, incumbent, suite, _backend(ray_cluster, shared), rule.interim)
    assert remote == local
    (verdict_l, findings_l), (verdict_r, findings_r) = rule(local), rule(remote)
    assert verdict_r == verdict_l
    assert [f.model_dump() for f in findings_r] == [f.model_dump() for f in findings_l]
    assert remote.stopped_early and len(remote.outcomes) < len(cases)
    assert remote.stop_reason.startswith("sequential")  # the rule stopped it, not a failure


def test_the_rules_stop_cancels_what_is_outstanding(ray_cluster: str, tmp_path: Path) -> None:
    """Slow calls (50 ms each) on 400 cases: after the rule stops at its first look, what was
    submitted and not needed is cancelled, so the cluster is idle long before it could have
    worked through the rest (about 20 s of calls)."""
    store = FileBlobStore(tmp_path / "blobs")
    cases, truth = _cases(400)
    suite = gr.CanarySuite(cases)
    candidate, incumbent = _pair(store, truth, noise=0.2, delay=0.05)
    evidence = _run(candidate, incumbent, suite, _backend(ray_cluster, store, chunk=1),
                    interim=lambda outcomes: "accept" if len(outcomes) >= 8 else "continue")
    assert evidence.stopped_early
    assert _idle(within=10.0)


def test_the_workers_read_the_weights_from_the_shared_store(
        ray_cluster: str, shared: S3BlobStore, s3_endpoint: str) -> None:
    """Weights altered in the store fail every candidate call on the workers: never accepted."""
    import s3_server

    cases, truth = _cases(20)
    candidate, incumbent = _pair(shared, truth, noise=0.1)
    digest = candidate.snapshot()["weights"]["$blob"]
    s3_server.client(s3_endpoint).put_object(Bucket=shared.bucket,
                                             Key=shared.prefix + digest.split(":")[1], Body=b"[0]")
    evidence = _run(candidate, incumbent, gr.CanarySuite(cases), _backend(ray_cluster, shared))
    assert not any(o.candidate_answered for o in evidence.outcomes)
    assert evidence.stopped_early  # at the first safety case: never accepted
    assert all("BlobIntegrityError" in str(o.candidate_error) for o in evidence.outcomes)


def test_a_dead_worker_fails_its_calls_and_the_review(ray_cluster: str, tmp_path: Path) -> None:
    """A worker process that dies mid-call is not retried: its calls fail, the reason (Ray's
    error) is recorded per case, and the review is not accepted."""
    store = FileBlobStore(tmp_path / "blobs")
    cases, truth = _cases(30)
    cases.append(gr.CanaryCase(id="die", input="die", expect=0, tags=("safety",)))
    suite = gr.CanarySuite(cases)
    candidate, incumbent = _pair(store, truth, noise=0.1)
    rule = gr.SequentialRule.for_suite(suite, margin=0.1)
    evidence = _run(candidate, incumbent, suite, _backend(ray_cluster, store, chunk=1),
                    rule.interim)
    died = next(o for o in evidence.outcomes if o.case_id == "die")
    assert not died.candidate_answered and "WorkerCrashedError" in str(died.candidate_error)
    assert evidence.stopped_early and "'die' failed" in evidence.stop_reason
    assert rule(evidence)[0] != "accept"


def test_a_timed_out_call_is_cancelled_on_the_cluster(ray_cluster: str, tmp_path: Path) -> None:
    """A call past its timeout counts as a failure and leaves the cluster idle."""
    store = FileBlobStore(tmp_path / "blobs")
    candidate = WeightsClient.create([1.0], 0.0, store, sleep=60)
    incumbent = WeightsClient.create([1.0], 0.0, store, sleep=0)
    cases = [gr.CanaryCase(id="hang", input="sleep", expect=0),
             gr.CanaryCase(id="ok", input=[1.0], expect=1)]
    evidence = _run(candidate, incumbent, gr.CanarySuite(cases),
                    _backend(ray_cluster, store, chunk=1), timeout=2.0)
    hang = next(o for o in evidence.outcomes if o.case_id == "hang")
    assert not hang.candidate_passed and "timeout" in str(hang.candidate_error)
    assert _idle(within=10.0)


def test_a_client_that_lies_about_its_state_fails(ray_cluster: str, tmp_path: Path) -> None:
    """A build that serves another state than the one given fails every call on the workers."""
    store = FileBlobStore(tmp_path / "blobs")
    client = DictClient({"answers": {"a": "1"}, "default": "?"})
    cases = [gr.CanaryCase(id="a", input="a", expect="1")]
    evidence = _run(client, client, gr.CanarySuite(cases),
                    _backend(ray_cluster, store, build="dask_clients:build_liar"))
    assert evidence.outcomes[0].candidate_error == "client raised ValueError"


def test_a_guard_reviews_on_ray_with_the_local_decision(ray_cluster: str, tmp_path: Path) -> None:
    """Through the whole update path, a guard whose RunSettings name a Ray cluster decides as
    the local guard does for the same seed: same verdict, same findings."""
    store = FileBlobStore(tmp_path / "blobs")
    state = {"answers": {f"q{i}": f"a{i}" for i in range(40)}, "default": "?"}
    cases = [gr.CanaryCase(id=f"c{i}", input=f"q{i}", expect=f"a{i}") for i in range(40)]
    cases.append(gr.CanaryCase(id="s", input="q0", expect="a0", tags=("safety",)))
    patch = {"op": "replace", "path": "/answers/q3", "value": "wrong"}
    settings = RunSettings(ray=RaySettings(address=ray_cluster, build="dask_clients:build_dict",
                                           blobs=store.url))

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
    assert [(f.check, f.passed, f.message) for f in remote.findings] == [
        (f.check, f.passed, f.message) for f in local.findings]
