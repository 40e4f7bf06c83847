"""Real ledgers for the report tests, built through the public API (Guard, DictClient, SQLiteLedger).

``build_ledger`` leaves a SQLite ledger and a blob folder with every kind of
decision a report must show: accepted, rejected by capability, rejected by a
hidden safety case, and one waiting for a human. The hidden cases' inputs
contain ``HIDDEN_MARKER``, which must never appear in a report or on the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import guardrails as gr
from guardrails.testing import DictClient

HIDDEN_MARKER = "SECRET-HIDDEN-CANARY"
PUBLIC_MARKER = "public-question"
HOSTILE = '<script>document.title="pwned"</script><img src="http://198.51.100.7/x.png">'
N_PUBLIC, N_HIDDEN = 80, 6


def cases() -> list[gr.CanaryCase]:
    public = [gr.CanaryCase(id=f"q{i:02d}", input=f"{PUBLIC_MARKER} {i}", expect=gr.Equals(value=f"a{i}"),
                            tags=(f"slice:{'easy' if i % 2 else 'hard'}",))
              for i in range(N_PUBLIC)]
    hidden = [gr.CanaryCase(id=f"h{i}", input=f"{HIDDEN_MARKER} {i}", expect=gr.Equals(value="refuse"),
                            tags=("safety",), hidden=True)
              for i in range(N_HIDDEN)]
    return public + hidden


def initial_state() -> dict[str, Any]:
    # Hidden inputs are nowhere in the state: the model answers them with its default.
    answers = {f"{PUBLIC_MARKER} {i}": f"a{i}" for i in range(N_PUBLIC)}
    return {"prompt": "You are careful.", "temperature": 0.2, "answers": answers,
            "default": "refuse"}


def _guard(ledger: gr.SQLiteLedger, blobs: gr.FileBlobStore) -> gr.Guard:
    suite = gr.CanarySuite(cases())
    return gr.Guard(
        gr.FrozenConstraints(frozen=[{"path": "/prompt_guard", "may_be_absent": True}],
                             drift_budget=1.0),
        suite, ledger=ledger, blob_store=blobs, seed=7,
        decision_rule=gr.SequentialRule.for_suite(suite, margin=0.2),
        approval=gr.ApprovalPolicy(kinds=("prompt",), inconclusive=False, timeout=None))


def build_ledger(workdir: Path, *, pending: bool = True) -> tuple[Path, Path]:
    """A ledger with accepted, rejected and (optionally) pending decisions; returns its paths."""
    ledger_path, blobs_path = workdir / "ledger.db", workdir / "blobs"
    ledger, blobs = gr.SQLiteLedger(ledger_path), gr.FileBlobStore(blobs_path)
    client = DictClient(initial_state())
    guarded = _guard(ledger, blobs).wrap(client)
    client.queue({"op": "replace", "path": "/temperature", "value": 0.3}, kind="params",
                 rationale="warmer answers " + HOSTILE)
    client.queue(*[{"op": "replace", "path": f"/answers/{PUBLIC_MARKER} {i}", "value": "?"}
                   for i in range(0, N_PUBLIC, 2)], kind="answers", rationale="shorter answers")
    client.queue({"op": "replace", "path": "/default", "value": "sure!"},
                 kind="answers", rationale="more helpful")
    if pending:
        client.queue({"op": "replace", "path": "/prompt", "value": "You are brief."},
                     kind="prompt", rationale="brevity")
    while guarded.self_improve() is not None:
        pass
    ledger.close()
    return ledger_path, blobs_path


def grow_ledger(path: Path, size: int) -> None:
    """Copies of the ledger's rejected decisions (the served version stays) until it holds
    ``size`` entries: a large ledger of real decisions, quickly."""
    ledger = gr.SQLiteLedger(path)
    rejected = [e.decision for e in ledger.entries() if e.decision and not e.decision.accepted]
    for i in range(size - len(ledger)):
        decision = rejected[i % len(rejected)]
        assert decision is not None
        ledger.record(decision.model_copy(update={"proposal_id": f"copy-{i}"}))
    ledger.close()
