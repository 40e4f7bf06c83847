"""The demo: a real self-training model whose updates the guard decides on evidence.

The end-to-end tests run the scenario once and then check its verdicts from
outside the guard: every state is rebuilt from the ledger and re-measured on
the canary data, so an accepted update must really have been non-inferior
and a rejected one must really have regressed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import guardrails as gr

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from guardrails_plugins.demos.digits import (
    DEFAULT_SEED,
    DemoRound,
    SelfTrainingDigits,
    accuracy,
    non_digit_images,
    predict_proba,
    run_demo,
    split_digits,
    traffic_batches,
)

MARGIN = 0.02


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoRound], list[str]]:
    workdir = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    rounds = run_demo(workdir, echo=lines.append)
    return workdir, rounds, lines


def _decisions(rounds: list[DemoRound]) -> list[gr.Decision]:
    return [r.decision for r in rounds if r.decision is not None]


def _client(workdir: Path, version: str) -> SelfTrainingDigits:
    """The model in the state the ledger recorded under ``version``, built from outside."""
    ledger = gr.SQLiteLedger(workdir / "demo-ledger.db")
    try:
        state = ledger.get_state(version)
    finally:
        ledger.close()
    return SelfTrainingDigits(state, gr.FileBlobStore(workdir / "demo-blobs"))


def _canary_accuracy(client: SelfTrainingDigits) -> float:
    X, y = split_digits(DEFAULT_SEED).canary
    return accuracy(lambda x: client.invoke(gr.Request(input=x)), X, y)


def _abstains_on_every_non_digit(client: SelfTrainingDigits) -> bool:
    return all(client.invoke(gr.Request(input=[round(float(v), 4) for v in image]))["label"]
               is None for image in non_digit_images().values())


@pytest.mark.slow
def test_the_demo_accepts_and_rejects(demo: tuple[Path, list[DemoRound], list[str]]) -> None:
    """At least one accepted update; at least two rejected, one of them on a frozen pointer
    and one on canary evidence (capability or safety)."""
    decisions = _decisions(demo[1])
    accepted = [d for d in decisions if d.accepted]
    rejected = [d for d in decisions if d.verdict is gr.Verdict.REJECTED]
    assert accepted and len(rejected) >= 2
    deciding = [d.deciding_finding.check for d in rejected if d.deciding_finding is not None]
    assert "frozen_pointer" in deciding
    assert {"capability", "safety_canary"} & set(deciding)


@pytest.mark.slow
def test_the_threshold_change_comes_from_the_model_and_is_rejected_as_frozen(
        demo: tuple[Path, list[DemoRound], list[str]]) -> None:
    """The model's own proposal to abstain less touches /abstain_below and nothing else."""
    params = [d for d in _decisions(demo[1]) if d.kind == "params"]
    assert params
    for decision in params:
        assert decision.source == "model" and "abstained on" in decision.rationale
        assert decision.deciding_finding is not None
        assert decision.deciding_finding.check == "frozen_pointer"
        assert decision.deciding_finding.evidence["pointer"] == "/abstain_below"
        # Decided statically: no canary ran.
        assert not any(f.check in {"capability", "safety_canary"} for f in decision.findings)


@pytest.mark.slow
def test_accepted_updates_really_were_non_inferior(
        demo: tuple[Path, list[DemoRound], list[str]]) -> None:
    """Re-measured outside the guard, every accepted candidate is within the margin of its
    parent on the capability canaries and abstains on every non-digit image."""
    workdir, rounds, _ = demo
    accepted = [d for d in _decisions(rounds) if d.accepted]
    assert accepted
    for decision in accepted:
        assert decision.parent and decision.candidate
        parent, candidate = _client(workdir, decision.parent), _client(workdir, decision.candidate)
        assert _canary_accuracy(candidate) >= _canary_accuracy(parent) - MARGIN - 1e-12
        assert _abstains_on_every_non_digit(candidate)


@pytest.mark.slow
def test_canary_rejections_really_were_regressions(
        demo: tuple[Path, list[DemoRound], list[str]]) -> None:
    """Re-measured outside the guard, every candidate rejected on canaries either fell
    more than the margin below its parent or read a digit into a non-digit image."""
    workdir, rounds, _ = demo
    rejected = [d for d in _decisions(rounds) if not d.accepted and d.deciding_finding
                and d.deciding_finding.check in {"capability", "safety_canary"}]
    assert rejected
    for decision in rejected:
        assert decision.parent and decision.candidate
        parent, candidate = _client(workdir, decision.parent), _client(workdir, decision.candidate)
        if decision.deciding_finding.check == "safety_canary":  # type: ignore[union-attr]
            assert not _abstains_on_every_non_digit(candidate)
        else:
            assert _canary_accuracy(candidate) < _canary_accuracy(parent) - MARGIN


@pytest.mark.slow
def test_drifted_self_training_looks_better_to_the_model_and_is_worse(
        demo: tuple[Path, list[DemoRound], list[str]]) -> None:
    """On drifted traffic each rejected weights proposal is more confident on that traffic
    than the served model, and worse on the held-out test the guard never saw."""
    drifted = [r for r in demo[1] if r.drift != (0, 0.0) and r.decision is not None
               and r.decision.kind == "weights"]
    assert len(drifted) >= 2
    for r in drifted:
        assert r.decision is not None and not r.decision.accepted
        assert r.candidate_traffic_confidence is not None and r.candidate_test_accuracy is not None
        assert r.candidate_traffic_confidence > r.traffic_confidence
        assert r.candidate_test_accuracy < r.test_accuracy
    # The guarded model never ends worse than the unguarded twin.
    assert demo[1][-1].test_accuracy > demo[1][-1].unguarded_test_accuracy


@pytest.mark.slow
def test_the_demo_leaves_a_verifiable_ledger_of_every_decision(
        demo: tuple[Path, list[DemoRound], list[str]]) -> None:
    """The ledger verifies (blobs included), records genesis plus every decision, and serves
    the last accepted version; the output says where it is."""
    workdir, rounds, lines = demo
    ledger = gr.SQLiteLedger(workdir / "demo-ledger.db")
    try:
        report = ledger.verify(gr.FileBlobStore(workdir / "demo-blobs"))
        assert report.ok, report.problem
        decided = [e.decision for e in ledger.entries() if e.decision is not None]
        assert len(decided) == 1 + len(_decisions(rounds))
        assert ledger.served_version() == rounds[-1].served_version
    finally:
        ledger.close()
    assert any(str(workdir / "demo-ledger.db") in line for line in lines)


@pytest.mark.slow
def test_the_demo_is_deterministic_and_starts_fresh(
        demo: tuple[Path, list[DemoRound], list[str]], tmp_path: Path) -> None:
    """A shorter run in a used work folder starts over and retraces the same versions."""
    rounds = demo[1]
    (tmp_path / "demo-blobs").mkdir()
    (tmp_path / "demo-ledger.db").write_bytes(b"left over from an earlier run")
    short = run_demo(tmp_path, rounds=3, echo=lambda *_: None)
    assert [r.served_version for r in short] == [r.served_version for r in rounds[:3]]
    assert [r.test_accuracy for r in short] == [r.test_accuracy for r in rounds[:3]]


# -- the client on its own -----------------------------------------------------------------


@pytest.fixture(scope="module")
def client() -> SelfTrainingDigits:
    data = split_digits(0)
    return SelfTrainingDigits.train(*data.initial, gr.MemoryBlobStore(), seed=0)


def test_the_client_implements_the_protocol(client: SelfTrainingDigits) -> None:
    assert isinstance(client, gr.SelfUpdatingClient)
    state = client.snapshot()
    assert list(gr.iter_blob_refs(state)) == [state["weights"]["$blob"]]
    assert gr.state_version(client.with_state(state).snapshot()) == gr.state_version(state)


def test_answers_match_scikit_learn(client: SelfTrainingDigits) -> None:
    X = split_digits(0).test[0][:50]
    np.testing.assert_allclose(predict_proba(client._model, X), client._model.predict_proba(X),
                               rtol=1e-12, atol=1e-12)
    out = client.invoke(gr.Request(input=X[0].tolist()))
    assert set(out) == {"label", "confidence"}
    assert (out["label"] is None) == (out["confidence"] < client.abstain_below)


def test_blank_input_is_abstained_and_bad_input_raises(client: SelfTrainingDigits) -> None:
    assert client.invoke(gr.Request(input=[0.0] * 64))["label"] is None
    with pytest.raises(ValueError, match="64 pixel values"):
        client.invoke(gr.Request(input=[0.0] * 63))


def test_proposals_never_change_the_client(client: SelfTrainingDigits) -> None:
    """Self-training and the threshold request leave the proposer's state as it was, and
    with_state builds a new client without touching the old one."""
    data = split_digits(0)
    before = gr.state_version(client.snapshot())
    proposer = client.with_state(client.snapshot())
    batches = traffic_batches(data.pool, 4, 0)
    proposer.observe(batches[0])
    weights = proposer.propose_update()
    assert weights is not None and weights.kind == "weights" and weights.parent == before
    assert {op.path for op in weights.patch} == {"/weights", "/self_training_rounds"}
    proposer.observe(batches[3])  # drifted: it abstains a lot, so it asks to abstain less
    threshold = proposer.propose_update()
    assert threshold is not None and threshold.kind == "params"
    assert threshold.patch[0].path == "/abstain_below"
    assert threshold.patch[0].value < client.abstain_below
    again = proposer.propose_update()  # asked once per served version; then it self-trains
    assert again is not None and again.kind == "weights"
    built = proposer.with_state(weights.apply(proposer.snapshot()))
    assert gr.state_version(built.snapshot()) != before
    assert gr.state_version(proposer.snapshot()) == before
    assert gr.state_version(client.snapshot()) == before
