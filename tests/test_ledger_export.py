"""``export_transparency_log``: a signed ledger as static files, refused when untrustworthy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import guardrails as gr


def _ledger(signing_key: gr.SigningKey | None) -> gr.MemoryLedger:
    ledger = gr.MemoryLedger(signing_key=signing_key)
    state = {"seed": 0}
    ledger.put_state(state)
    ledger.promote(gr.Decision.accept(candidate=gr.state_version(state), kind="genesis",
                                      source="operator", anchor=True), None)
    ledger.record(gr.Decision.reject([gr.Finding(check="x", passed=False, message="no")],
                                     parent=gr.state_version(state)))
    return ledger


def test_a_signed_ledger_is_written_entry_by_entry_with_proofs(tmp_path: Path) -> None:
    """Each entry's file hashes to the leaf in its proof, and the proofs are of the signed size."""
    out = gr.export_transparency_log(_ledger(gr.SigningKey.generate("test-log")), tmp_path / "log")
    entries = sorted((out / "entries").iterdir())
    assert len(entries) == 2 and (out / "checkpoint").read_text().splitlines()[1] == "2"
    for path in entries:
        proof = gr.InclusionProof.model_validate_json((out / "proofs" / path.name).read_text())
        proof.verify(leaf_data=path.read_bytes())
        assert proof.tree_size == 2
        assert json.loads(path.read_bytes())["index"] == int(path.stem)


def test_an_unsigned_ledger_is_not_exported(tmp_path: Path) -> None:
    """Without signed checkpoints there is nothing to trust an export by: ValueError."""
    with pytest.raises(ValueError, match="signs no checkpoints"):
        gr.export_transparency_log(_ledger(None), tmp_path / "log")
    assert not (tmp_path / "log").exists()


def test_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    """An export never mixes with files already in the directory."""
    (tmp_path / "stale").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        gr.export_transparency_log(_ledger(gr.SigningKey.generate("test-log")), tmp_path)
