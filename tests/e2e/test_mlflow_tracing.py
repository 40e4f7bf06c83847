"""End to end: reviews exported over OTLP/HTTP to a real MLflow tracking server, read back by id.

MLflow runs as a user would run it: from its own virtual environment (built
once from the package registry and cached under ``.cache/e2e/``, or under
``$GUARDRAILS_E2E_CACHE``), never as a dependency of the library. The server
listens on 127.0.0.1 only, on a free port, with a temporary SQLite store,
telemetry off and job execution disabled; it is stopped by its process id.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import guardrails as gr
from guardrails._telemetry import (
    ATTR_CANDIDATE,
    ATTR_CASE_ID,
    ATTR_CASES_USED,
    ATTR_DECIDING_CHECK,
    ATTR_ENTRY_INDEX,
    ATTR_PARENT,
    ATTR_PROPOSAL_ID,
    ATTR_PROPOSAL_KIND,
    ATTR_PROPOSAL_SOURCE,
    ATTR_SIDE,
    ATTR_VERDICT,
    GENAI_EVALUATION_EVENT,
    GENAI_EVALUATION_LABEL,
    SPAN_REVIEW,
    SPAN_STAGE_PREFIX,
)
from guardrails.testing import DictClient

pytestmark = pytest.mark.slow

MLFLOW_REQUIREMENT = "mlflow==3.17.2"
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
TRACE_ID_PREFIX = "tr-"  # MLflow's id of a trace ingested over OTLP: "tr-" + the 32 hex digits
SERVER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false",
}
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}

GOOD = {"op": "replace", "path": "/system_prompt", "value": "You are a concise assistant."}
FROZEN = {"op": "replace", "path": "/params/threshold", "value": 0.1}


# -- MLflow's own virtual environment and server --------------------------------------------


def mlflow_venv() -> Path:
    """A virtual environment with MLflow from the registry; reused while it is complete."""
    root = Path(os.environ.get("GUARDRAILS_E2E_CACHE", REPO / ".cache" / "e2e"))
    venv = root / MLFLOW_REQUIREMENT.replace("==", "-")
    done = venv / ".installed"
    if done.exists() and (venv / "bin" / "mlflow").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", MLFLOW_REQUIREMENT],
        capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, f"pip install {MLFLOW_REQUIREMENT} failed:\n{install.stderr[-4000:]}"
    done.write_text(MLFLOW_REQUIREMENT + "\n")
    return venv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return error.code, json.loads(text)
        except json.JSONDecodeError:
            return error.code, text


@dataclass
class MLflowServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(server: MLflowServer) -> None:
    """SIGTERM to the server's process id (it forwards it to its uvicorn child); then make
    sure nothing of its process group, which it leads, is left."""
    pid = server.process.pid
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def start(venv: Path, workdir: Path) -> MLflowServer:
    port = free_port()
    log = workdir / f"mlflow-server-{port}.log"
    command = [
        str(venv / "bin" / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--default-artifact-root", str(workdir / "artifacts"),
    ]
    env = {**os.environ, **SERVER_ENV}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    server = MLflowServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    stop(server)
    raise RuntimeError(f"mlflow server not ready on {server.url} after 180 s:\n{server.log_tail()}")


def listening_addresses(pgid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket listening in the process group ``pgid`` (Linux)."""
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, ValueError, IndexError):
            continue
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_address, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_address)
            # /proc stores each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLflowServer]:
    started = time.perf_counter()
    venv = mlflow_venv()
    print(f"\nmlflow venv ready in {time.perf_counter() - started:.1f} s: {venv}")
    server = start(venv, tmp_path_factory.mktemp("mlflow"))
    try:
        print(f"mlflow server (pid {server.process.pid}) up on {server.url} after "
              f"{time.perf_counter() - started:.1f} s")
        yield server
    finally:
        stop(server)
    assert not _group_alive(server.process.pid), "the mlflow server outlived its stop"


def create_experiment(server: MLflowServer, name: str) -> str:
    status, body = http_json("POST", f"{server.url}/api/2.0/mlflow/experiments/create",
                             {"name": name})
    assert status == 200, (status, body)
    return str(body["experiment_id"])


# -- reading traces back over MLflow's REST API ---------------------------------------------


def _value(any_value: dict[str, Any]) -> Any:
    """A Python value from an OTLP ``AnyValue`` in protobuf's JSON mapping."""
    ((kind, value),) = any_value.items()
    if kind == "int_value":
        return int(value)  # int64 may come as a JSON string
    if kind == "double_value":
        return float(value)
    if kind == "array_value":
        return tuple(_value(v) for v in value.get("values", []))
    return value


def attributes_of(item: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: _value(a["value"]) for a in item.get("attributes", [])}


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def get_trace(server: MLflowServer, trace_id: str, n_spans: int, timeout: float = 30.0
              ) -> dict[str, Any]:
    """The trace with all ``n_spans`` spans, by id: ``GET /api/3.0/mlflow/traces/get``."""
    url = f"{server.url}/api/3.0/mlflow/traces/get?trace_id={TRACE_ID_PREFIX}{trace_id}"
    deadline = time.monotonic() + timeout
    while True:
        status, body = http_json("GET", url)
        if status == 200 and len(body["trace"].get("spans", [])) >= n_spans:
            return dict(body["trace"])
        if time.monotonic() > deadline:
            raise AssertionError(f"trace {trace_id} not complete in MLflow: {status} {body!r:.2000}\n"
                                 f"{server.log_tail()}")
        time.sleep(0.5)


def searched_trace_ids(server: MLflowServer, experiment_id: str) -> set[str]:
    status, body = http_json("POST", f"{server.url}/api/3.0/mlflow/traces/search", {
        "locations": [{"type": "MLFLOW_EXPERIMENT",
                       "mlflow_experiment": {"experiment_id": experiment_id}}],
        "max_results": 100,
    })
    assert status == 200, (status, body)
    return {t["trace_id"] for t in body.get("traces", [])}


class RecordingExporter(SpanExporter):
    """Wraps the OTLP exporter and keeps the result of every export."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.results: list[SpanExportResult] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


# -- the tests ------------------------------------------------------------------------------


def test_server_listens_on_loopback_only(mlflow_server: MLflowServer) -> None:
    addresses = listening_addresses(mlflow_server.process.pid)
    port = int(mlflow_server.url.rsplit(":", 1)[1])
    assert (("127.0.0.1", port)) in addresses
    assert {address for address, _ in addresses} <= LOOPBACK, addresses


def test_reviews_exported_over_otlp_read_back_by_trace_id(
    mlflow_server: MLflowServer, make_guard: Callable[..., gr.Guard], client: DictClient
) -> None:
    """An accepted and a rejected review reach MLflow with their span tree, decision
    attributes (names, values and types) and canary events intact."""
    experiment_id = create_experiment(mlflow_server, "guardrails-e2e-reviews")
    otlp = RecordingExporter(OTLPSpanExporter(
        endpoint=f"{mlflow_server.url}/v1/traces", headers={EXPERIMENT_HEADER: experiment_id},
        timeout=10))
    local = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "guardrails-e2e"}))
    provider.add_span_processor(SimpleSpanProcessor(local))
    provider.add_span_processor(BatchSpanProcessor(otlp))
    guarded = make_guard(tracer_provider=provider).wrap(client)

    accepted = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[GOOD]))
    rejected = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[FROZEN]))
    assert (accepted.verdict.value, rejected.verdict.value) == ("accepted", "rejected")
    assert provider.force_flush(30_000)
    provider.shutdown()
    assert otlp.results and all(r is SpanExportResult.SUCCESS for r in otlp.results), otlp.results

    sent = local.get_finished_spans()
    reviews = [s for s in sent if s.name == SPAN_REVIEW]
    assert len(reviews) == 2
    found = searched_trace_ids(mlflow_server, experiment_id)
    for decision, review in zip((accepted, rejected), reviews, strict=True):
        trace_id = format(review.context.trace_id, "032x")
        assert TRACE_ID_PREFIX + trace_id in found
        ours = [s for s in sent if s.context.trace_id == review.context.trace_id]
        stored = get_trace(mlflow_server, trace_id, len(ours))
        info = stored["trace_info"]
        assert info["trace_location"]["mlflow_experiment"]["experiment_id"] == experiment_id
        spans = {s["name"]: s for s in stored["spans"]}
        assert sorted(spans) == sorted(s.name for s in ours)

        root = spans[SPAN_REVIEW]
        assert "parent_span_id" not in root or not root["parent_span_id"]
        assert _hex(root["trace_id"]) == trace_id
        attributes = attributes_of(root)
        # every attribute the guard set arrived, with its value and type
        for key, value in (review.attributes or {}).items():
            assert key in attributes, key
            assert attributes[key] == value and type(attributes[key]) is type(value), key
        assert {k for k in attributes if k.startswith("guardrails.")} == set(review.attributes or {})
        assert attributes[ATTR_VERDICT] == decision.verdict.value
        assert attributes[ATTR_PROPOSAL_ID] == decision.proposal_id
        assert attributes[ATTR_PROPOSAL_KIND] == "state"
        assert attributes[ATTR_PROPOSAL_SOURCE] == "model"
        assert attributes[ATTR_PARENT] == decision.parent
        assert attributes[ATTR_CANDIDATE] == decision.candidate
        assert attributes[ATTR_ENTRY_INDEX] == decision.entry_index
        for name, span in spans.items():
            if name != SPAN_REVIEW:
                assert name.startswith(SPAN_STAGE_PREFIX)
                assert span["parent_span_id"] == root["span_id"], name

        if decision is accepted:
            assert ATTR_DECIDING_CHECK not in attributes
            assert isinstance(attributes[ATTR_CASES_USED], int) and attributes[ATTR_CASES_USED] > 0
            assert set(spans) == {SPAN_REVIEW} | {SPAN_STAGE_PREFIX + stage for stage in (
                "validate", "static_checks", "sandbox", "canary", "decision", "promotion")}
            events = spans[SPAN_STAGE_PREFIX + "canary"].get("events", [])
            (canary,) = [s for s in ours if s.name == SPAN_STAGE_PREFIX + "canary"]
            assert len(events) == len(canary.events) > 0
            for event in events:
                assert event["name"] == GENAI_EVALUATION_EVENT
                event_attributes = attributes_of(event)
                assert event_attributes[GENAI_EVALUATION_LABEL] in {"pass", "fail", "error"}
                assert event_attributes[ATTR_SIDE] in {"candidate", "incumbent"}
                assert event_attributes[ATTR_CASE_ID]
        else:
            assert attributes[ATTR_DECIDING_CHECK] == "frozen_pointer"
            assert SPAN_STAGE_PREFIX + "promotion" not in spans


def test_demo_script_exports_its_reviews(mlflow_server: MLflowServer, tmp_path: Path) -> None:
    """examples/tracing/demo_with_otlp.py, as the README runs it, for two rounds."""
    experiment_id = create_experiment(mlflow_server, "guardrails-e2e-demo")
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "tracing" / "demo_with_otlp.py"),
         "--endpoint", mlflow_server.url, "--header", f"{EXPERIMENT_HEADER}={experiment_id}",
         "--rounds", "2", "--workdir", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    trace_ids = result.stdout.split()
    assert len(trace_ids) == 2, result.stdout
    for trace_id in trace_ids:
        stored = get_trace(mlflow_server, trace_id, 2)
        (root,) = [s for s in stored["spans"] if s["name"] == SPAN_REVIEW]
        attributes = attributes_of(root)
        assert attributes[ATTR_PROPOSAL_KIND] == "weights"
        assert attributes[ATTR_VERDICT] in {"accepted", "rejected", "inconclusive"}
        assert isinstance(attributes[ATTR_ENTRY_INDEX], int)
    assert {TRACE_ID_PREFIX + t for t in trace_ids} <= searched_trace_ids(mlflow_server, experiment_id)
