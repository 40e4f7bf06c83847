"""The demo: a real self-training model whose updates the guard decides on evidence."""

from __future__ import annotations

from pathlib import Path

import pytest
from guardrails_plugins.demo_digits import run_demo

import guardrails as gr


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> list[gr.Decision]:
    return run_demo(tmp_path_factory.mktemp("demo"), echo=lambda *_: None)


def test_the_demo_accepts_at_least_one_update(decisions: list[gr.Decision]) -> None:
    """At least one self-training step on clean traffic is accepted."""
    assert any(d.accepted for d in decisions)


def test_the_demo_rejects_drifted_self_training_on_canary_evidence(
        decisions: list[gr.Decision]) -> None:
    """At least two weight updates are rejected by the canaries, not by a static rule."""
    rejected = [d for d in decisions if d.kind == "weights" and not d.accepted]
    assert len(rejected) >= 2
    assert all(d.deciding_finding is not None
               and d.deciding_finding.check in {"capability", "safety_canary"} for d in rejected)


def test_the_threshold_change_is_rejected_as_frozen(decisions: list[gr.Decision]) -> None:
    """The model's own proposal to abstain less is rejected by the frozen pointer."""
    params = [d for d in decisions if d.kind == "params"]
    assert params and all(d.deciding_finding is not None
                          and d.deciding_finding.check == "frozen_pointer" for d in params)


def test_accepted_updates_really_were_non_inferior(decisions: list[gr.Decision]) -> None:
    """Every accepted decision's capability evidence is within the margin of the incumbent."""
    for decision in (d for d in decisions if d.accepted):
        evidence = next(f for f in decision.findings if f.check == "capability").evidence
        assert evidence["candidate_pass_rate"] >= evidence["incumbent_pass_rate"] - evidence["margin"]


def test_the_demo_leaves_a_verifiable_ledger(tmp_path: Path) -> None:
    """After a short run the ledger in the work folder verifies, blobs included."""
    run_demo(tmp_path, rounds=2, echo=lambda *_: None)
    ledger = gr.SQLiteLedger(tmp_path / "demo-ledger.db")
    assert ledger.verify(gr.FileBlobStore(tmp_path / "demo-blobs")).ok
