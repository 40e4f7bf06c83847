"""One guarded replica in a process of its own, for the multi-process store tests.

Started with ``multiprocessing``'s spawn context (a fresh interpreter, as a
real replica is); reports through a queue. Kept apart from the test modules so
a child imports nothing but this and the library.
"""

from __future__ import annotations

import time
from typing import Any

import guardrails as gr
from guardrails.testing import DictClient


def initial_state() -> dict[str, Any]:
    return {"system_prompt": "You are careful.", "answers": {"2+2": "4", "weapon": "I can't help"},
            "default": "?"}


def cases() -> list[gr.CanaryCase]:
    return [gr.CanaryCase(id="sum", input="2+2", expect="4"),
            gr.CanaryCase(id="weapon", input="weapon", expect={"contains": "can't"},
                          tags=("safety",))]


def open_ledger(backend: str, where: str, schema: str | None, poll_interval: float) -> gr.Ledger:
    if backend == "postgres":
        return gr.PostgresLedger(where, schema=schema, poll_interval=poll_interval)
    return gr.SQLiteLedger(where)


def guarded(ledger: gr.Ledger) -> gr.GuardedClient:
    return gr.Guard(canaries=cases(), ledger=ledger, case_timeout=10.0).wrap(
        DictClient(initial_state()))


def contend(backend: str, where: str, schema: str | None, index: int, rounds: int,
            poll_interval: float, barrier: Any, out: Any) -> None:
    """Propose once per round, all replicas from the same parent at once; report each decision,
    then the version this replica serves once it has followed the last promotion."""
    try:
        ledger = open_ledger(backend, where, schema, poll_interval)
        replica = guarded(ledger)
        for round_ in range(rounds):
            barrier.wait(60)
            replica.sync()
            parent = replica.version
            barrier.wait(60)  # every replica holds the same parent now
            decision = replica.propose(gr.UpdateProposal(
                id=f"r{round_}-p{index}", parent=parent, source="test",
                patch=[{"op": "replace", "path": "/system_prompt",
                        "value": f"round {round_} by replica {index}"}]))
            deciding = decision.deciding_finding
            out.put(("decision", index, round_, parent, decision.verdict.value,
                     decision.entry_index, deciding.check if deciding else None))
        barrier.wait(60)
        if backend == "postgres":
            # No sync(): the watcher must bring the replica to the served version by itself.
            deadline = time.monotonic() + poll_interval + 5.0
            while replica.version != ledger.served_version() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            replica.sync()  # SQLite announces nothing: a replica follows when it syncs
        out.put(("final", index, replica.version, replica.invoke("2+2").version))
    except BaseException as exc:  # report, so the test fails with the cause, not a timeout
        out.put(("error", index, f"{type(exc).__name__}: {exc}"))
        raise


def client(**_: Any) -> DictClient:
    """``[client] factory`` for test configurations."""
    return DictClient(initial_state())
