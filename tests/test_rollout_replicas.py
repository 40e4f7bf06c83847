"""Several replica processes serve one rollout over PostgreSQL: one assignment per request key,
one promotion or abort per attempt, and every call counted once."""

from __future__ import annotations

import multiprocessing
from collections import defaultdict
from typing import Any

import pytest
import rollout_worker

import guardrails as gr
from guardrails.rollout import PostgresRolloutStore


@pytest.mark.slow
def test_replica_processes_share_one_rollout(postgres_dsn: str, pg_schema: str) -> None:
    """Three processes serve while they all evaluate: the same key gets the same version in the
    same step on every replica, the attempt ends exactly once, the store holds each call once."""
    ledger = gr.PostgresLedger(postgres_dsn, schema=pg_schema)
    leader = rollout_worker.guarded(ledger)
    decision = leader.propose({"parent": leader.version,
                               "patch": [{"op": "replace", "path": "/rev", "value": 1}]})
    assert decision.accepted, decision.reasons
    attempt = decision.findings[-1].evidence["attempt"]
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(3), context.Queue()
    processes = [context.Process(target=rollout_worker.serve, args=(
        postgres_dsn, pg_schema, 600, barrier, out)) for _ in range(3)]
    for process in processes:
        process.start()
    reports: list[Any] = []
    try:
        while len(reports) < 3:
            reports.append(out.get(timeout=180))
            assert reports[-1][0] != "error", reports[-1]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    versions: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    for _, seen, _, _ in reports:
        for attempt_id, seq, key, version in seen:
            versions[(attempt_id, seq, key)].add(version)
    assert versions and all(len(v) == 1 for v in versions.values())
    events = [e.body for e in ledger.entries() if e.body.get("event") == "rollout"]
    finals = [e for e in events if e["phase"] in ("promoted", "aborted")]
    assert len(finals) == 1 and finals[0]["phase"] == "promoted"
    assert sorted(e["seq"] for e in events) == list(range(len(events)))  # each move once
    store = PostgresRolloutStore(postgres_dsn, pg_schema)
    assert store.count_calls(attempt) == sum(r[2] for r in reports)
    assert {r[3] for r in reports} == {decision.candidate} == {ledger.served_version()}
    assert ledger.verify().ok
    store.close()
    ledger.close()
