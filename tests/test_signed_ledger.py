"""Signed checkpoints from configuration, inclusion proofs on decisions, the tree head in traces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import guardrails as gr
from guardrails._cli import main
from guardrails.testing import DictClient, capture_telemetry

CONFIG = """
[canaries]
files = ["cases.jsonl"]

[ledger]
signing_key = "keys/ledger.key"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cases.jsonl").write_text('{"id": "a", "input": "a", "expect": "1"}\n')
    (tmp_path / "guardrails.toml").write_text(CONFIG)
    result = CliRunner().invoke(main, ["ledger", "keygen", "demo-ledger",
                                       "--out", str(tmp_path / "keys" / "ledger")])
    assert result.exit_code == 0, result.output
    return tmp_path


def client() -> DictClient:
    return DictClient({"p": 1, "answers": {"a": "1"}})


def test_keygen_writes_a_private_key_only_its_owner_can_read(project: Path) -> None:
    """ledger keygen writes NAME.key with mode 0600 and NAME.pub beside it."""
    assert os.stat(project / "keys" / "ledger.key").st_mode & 0o777 == 0o600
    assert (project / "keys" / "ledger.pub").read_text().startswith("demo-ledger+")


def test_keygen_refuses_to_overwrite_a_key(project: Path) -> None:
    """A second keygen to the same path exits 3 instead of destroying the key."""
    result = CliRunner().invoke(main, ["ledger", "keygen", "x", "--out",
                                       str(project / "keys" / "ledger")])
    assert result.exit_code == 3


def test_a_configured_signing_key_signs_a_checkpoint_after_every_append(project: Path) -> None:
    """With [ledger] signing_key, the ledger holds a checkpoint that verifies with the public key."""
    guarded = gr.Guard.from_config(project / "guardrails.toml").wrap(client())
    guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/p", "value": 2}]))
    note = guarded.ledger.latest_checkpoint()
    assert note is not None
    checkpoint = gr.Checkpoint.verify(note, [gr.VerifierKey.load(project / "keys" / "ledger.pub")])
    assert checkpoint.size == len(guarded.ledger)
    result = CliRunner().invoke(main, ["ledger", "verify", str(project / ".guardrails/ledger.db"),
                                       "--key", str(project / "keys" / "ledger.pub")])
    assert result.exit_code == 0, result.output


def test_a_missing_key_file_is_a_config_error_naming_the_file(project: Path) -> None:
    """A signing_key that does not exist is reported with the configuration file and the key."""
    (project / "guardrails.toml").write_text(CONFIG.replace("keys/ledger.key", "keys/none.key"))
    with pytest.raises(gr.ConfigError, match=r"guardrails.toml \[ledger\].*none.key"):
        gr.Guard.from_config(project / "guardrails.toml")


def test_every_decision_carries_an_inclusion_proof_that_verifies() -> None:
    """Accepted and rejected decisions come back with a proof of their ledger entry."""
    guarded = gr.Guard(gr.FrozenConstraints(frozen=["/p"]),
                       [gr.CanaryCase(id="a", input="a", expect="1")]).wrap(client())
    rejected = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/p", "value": 2}]))
    accepted = guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "add", "path": "/q", "value": 2}]))
    for decision in (rejected, accepted):
        assert decision.inclusion_proof is not None
        proof = gr.InclusionProof.model_validate(decision.inclusion_proof)
        assert proof.leaf_index == decision.entry_index
        proof.verify()


def test_the_review_span_exports_the_tree_head() -> None:
    """The review span carries the ledger size and root, an independent copy in the backend."""
    tracer_provider, spans, _, _ = capture_telemetry()
    guarded = gr.Guard(gr.FrozenConstraints(), [gr.CanaryCase(id="a", input="a", expect="1")],
                       tracer_provider=tracer_provider).wrap(client())
    guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=[
        {"op": "replace", "path": "/p", "value": 2}]))
    (review,) = [s for s in spans.get_finished_spans() if s.name == "guardrails.review"]
    size, root = guarded.ledger.root()
    assert review.attributes["guardrails.ledger.size"] == size == 2
    assert review.attributes["guardrails.ledger.root"] == root.hex()
