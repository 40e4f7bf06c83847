"""The progress callback a command line uses to draw its bar while canaries run."""

from __future__ import annotations

import guardrails as gr
from guardrails.testing import DictClient


def test_progress_reports_every_case_up_to_the_planned_total() -> None:
    """propose(progress=...) reports (done, planned, status) as batches finish, ending at the total."""
    cases = [gr.CanaryCase(id=str(i), input=str(i), expect="x") for i in range(5)]
    guarded = gr.Guard(gr.FrozenConstraints(), cases,
                       canary_run=gr.RunSettings(batch_size=2, smoke_cases=1)).wrap(
        DictClient({"answers": {}, "default": "x", "p": 1}))
    seen: list[tuple[int, int, str]] = []
    decision = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/p", "value": 2}]), progress=lambda *a: seen.append(a))
    assert decision.accepted
    done = [d for d, _, _ in seen]
    assert done == sorted(done) and seen[-1] == (5, 5, "continue")
    assert all(planned == 5 for _, planned, _ in seen)
