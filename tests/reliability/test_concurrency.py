"""Concurrency: many threads and many processes proposing against one SQLite ledger.

Each contender has its own connection and guard, as separate services sharing
a ledger file would. The ledger's compare-and-swap must give exactly one
acceptance per parent version, every decision a contender was handed must be
in the ledger (and nothing else), and the chain must verify.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from contender import contend
from structlog.testing import capture_logs

import guardrails as gr

WORKER = Path(__file__).resolve().parent / "contender.py"


def check_ledger(path: Path, decisions: list[dict[str, Any]]) -> gr.SQLiteLedger:
    """The shared checks: the chain verifies, no decision is lost or invented, and every
    parent version has exactly one acceptance (a single line of accepted versions)."""
    ledger = gr.SQLiteLedger(path)
    report = ledger.verify()
    assert report.ok, report.problem
    entries = list(ledger.entries())
    genesis = [e for e in entries if e.decision is not None and e.decision.kind == "genesis"]
    assert len(genesis) == 1, "several contenders recorded a genesis entry"
    recorded = {e.decision.proposal_id: e for e in entries
                if e.decision is not None and e.decision.kind != "genesis"}
    handed = {d["proposal_id"]: d for d in decisions}
    assert len(handed) == len(decisions), "two contenders were handed the same proposal id"
    assert recorded.keys() == handed.keys(), "a decision was lost, or one nobody was handed"
    for proposal_id, decision in handed.items():
        entry = recorded[proposal_id]
        assert entry.index == decision["entry_index"]
        assert entry.decision is not None and entry.decision.verdict.value == decision["verdict"]
    accepted = [e.decision for e in entries if e.decision is not None and e.decision.accepted]
    per_parent = Counter(d.parent for d in accepted[1:])
    assert all(count == 1 for count in per_parent.values()), per_parent.most_common(3)
    for before, after in itertools.pairwise(accepted):
        assert after.parent == before.candidate  # one line, no fork
    assert ledger.served_version() == accepted[-1].candidate
    for decision in decisions:
        if decision["verdict"] != "accepted":
            assert decision["verdict"] == "rejected" and "stale_parent" in decision["checks"]
    return ledger


def test_threads_racing_on_one_parent_get_exactly_one_acceptance(tmp_path: Path) -> None:
    """Six threads, each its own guard and connection, race to record the genesis entry and
    then, round after round, propose against the same parent: one wins each round, the others
    are rejected as stale, and the ledger holds every decision."""
    path, threads, rounds = tmp_path / "ledger.db", 6, 4
    barrier = threading.Barrier(threads)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results.extend(contend(path, f"t{index}", rounds, time.time() + 0.2, barrier))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    with capture_logs():
        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    assert errors == []
    assert len(results) == threads * rounds
    check_ledger(path, results).close()
    for number in range(rounds):
        same_round = [d for d in results if d["round"] == number]
        assert len({d["parent"] for d in same_round}) == 1, "a round did not share its parent"
        assert sum(d["verdict"] == "accepted" for d in same_round) == 1


def test_processes_and_threads_proposing_together_keep_one_line_of_acceptances(
        tmp_path: Path) -> None:
    """Three processes of two threads each propose against whatever they serve, as fast as
    they can: exactly one acceptance per parent version, no lost records, chain intact."""
    path, processes, threads, proposals = tmp_path / "ledger.db", 3, 2, 5
    start = time.time() + 2.0  # after every interpreter has imported guardrails
    outs = [tmp_path / f"out{i}.json" for i in range(processes)]
    workers = [subprocess.Popen(
        [sys.executable, str(WORKER), str(path), str(out), "--threads", str(threads),
         "--proposals", str(proposals), "--start", str(start), "--tag", f"p{i}-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, out in enumerate(outs)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    decisions: list[dict[str, Any]] = []
    for out in outs:
        report = json.loads(out.read_text())
        assert report["errors"] == []
        decisions += report["decisions"]
    assert len(decisions) == processes * threads * proposals
    ledger = check_ledger(path, decisions)
    assert sum(d["verdict"] == "accepted" for d in decisions) >= 1
    ledger.close()
