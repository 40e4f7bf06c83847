"""A process of the concurrency test: threads proposing against one shared SQLite ledger.

    python contender.py LEDGER OUT.json --threads T --proposals N --start EPOCH --tag TAG

Every thread opens its own connection and guard (as separate services would),
wraps a client in the initial state at ``--start`` (so every thread of every
process races to record the genesis entry), then proposes ``N`` changes, each
against the version it serves at that moment. Every returned decision is
written to ``OUT.json``. Not a test module.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import structlog
from fault_kit import base_cases, base_state

import guardrails as gr
from guardrails.testing import DictClient


def contend(path: Path, tag: str, proposals: int, start: float, barrier: Any = None,
            ) -> list[dict[str, Any]]:
    """One contender: its own ledger connection and guard; returns its decisions."""
    ledger = gr.SQLiteLedger(path)
    try:
        guard = gr.Guard(gr.FrozenConstraints(frozen=("/tools",)), base_cases(), ledger=ledger,
                         case_timeout=10.0, integrity_check_every=0)
        time.sleep(max(0.0, start - time.time()))
        guarded = guard.wrap(DictClient(base_state()))
        out = []
        for number in range(proposals):
            if barrier is not None:
                barrier.wait()
            guarded.sync()
            decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
                {"op": "replace", "path": "/system_prompt",
                 "value": f"You are a careful assistant ({tag}, {number})."}]))
            out.append({"proposal_id": decision.proposal_id, "verdict": decision.verdict.value,
                        "parent": decision.parent, "candidate": decision.candidate,
                        "entry_index": decision.entry_index, "round": number,
                        "checks": [f.check for f in decision.findings if not f.passed]})
        return out
    finally:
        ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ledger", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--proposals", type=int, default=5)
    parser.add_argument("--start", type=float, default=0.0)
    parser.add_argument("--tag", default="p")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    results: list[dict[str, Any]] = []
    errors: list[str] = []

    def run(index: int) -> None:
        try:
            results.extend(contend(args.ledger, f"{args.tag}{index}", args.proposals, args.start))
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    args.out.write_text(json.dumps({"decisions": results, "errors": errors}))


if __name__ == "__main__":
    main()
