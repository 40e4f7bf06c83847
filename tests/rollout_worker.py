"""One serving replica during a rollout, in a process of its own (spawned), for the
multi-process rollout test over PostgreSQL. Reports through a queue."""

from __future__ import annotations

from typing import Any

import guardrails as gr
from guardrails.rollout import RolloutPolicy
from guardrails.testing import DictClient

POLICY = RolloutPolicy(steps=(10, 50, 100), min_samples=40, evaluate_every=5)
STATE = {"answers": {"a": "A"}, "rev": 0}
KEYS = 300


def guarded(ledger: gr.Ledger) -> gr.GuardedClient:
    return gr.Guard(canaries=[gr.CanaryCase(id="a", input="a", expect="A")], ledger=ledger,
                    rollout=POLICY).wrap(DictClient(STATE))


def serve(dsn: str, schema: str, calls: int, barrier: Any, out: Any) -> None:
    """Serve ``calls`` calls over the shared keys; report (attempt, seq, key, version) for each
    call made during the rollout, how many of them carried a response id, and the end state."""
    try:
        ledger = gr.PostgresLedger(dsn, schema=schema, poll_interval=0.2)
        replica = guarded(ledger)
        barrier.wait(60)
        replica.sync()
        seen, counted = [], 0
        for i in range(calls):
            rollout = replica._rollout
            response = replica.invoke(gr.Request(input="a", metadata={"user_id": f"k{i % KEYS}"}))
            if rollout is not None and "guardrails.response_id" in response.metadata:
                counted += 1
                seen.append((rollout.state.attempt, rollout.state.seq, f"k{i % KEYS}",
                             response.version))
        if replica._rollout is not None:
            replica._rollout.flush()
        barrier.wait(60)
        replica.sync()
        out.put(("final", seen, counted, replica.version))
    except BaseException as exc:  # reported, so the test shows it
        out.put(("error", f"{type(exc).__name__}: {exc}"))
