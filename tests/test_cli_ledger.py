"""``guardrails ledger prove`` and ``guardrails ledger verify --key``, through click's runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

import guardrails as gr
from guardrails._cli import main
from guardrails.ledger._checkpoint import Checkpoint, SigningKey
from guardrails.ledger._merkle import InclusionProof

KEY = SigningKey.generate("example.com/ledger")
STATE_0 = {"prompt": "v0"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; undo that for the tests that follow."""
    yield
    structlog.reset_defaults()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def make_ledger(path: Path, key: SigningKey | None = KEY, events: int = 4) -> None:
    ledger = gr.SQLiteLedger(path, signing_key=key)
    ledger.put_state(STATE_0)
    ledger.promote(gr.Decision.accept(candidate=gr.state_version(STATE_0), kind="genesis",
                                      source="operator", anchor=True), None)
    for number in range(events):
        ledger.record_event("note", n=number)
    ledger.close()


def test_prove_prints_a_checkable_inclusion_proof(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_ledger(path)
    result = run("ledger", "prove", str(path), "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    proof = InclusionProof.model_validate_json(result.output)
    assert (proof.leaf_index, proof.tree_size) == (2, 5)
    ledger = gr.SQLiteLedger(path)
    entry = next(ledger.entries(2))
    leaf = json.dumps({"index": entry.index, "type": entry.type, "body": entry.body,
                       "prev_hash": entry.prev_hash}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    checkpoint = Checkpoint.verify(data["checkpoint"], KEY.verifier, origin=ledger.origin)
    proof.verify(root_hash=checkpoint.root_hash, leaf_data=leaf)
    assert data["root_hash"] == checkpoint.root_hash.hex()
    ledger.close()


def test_prove_an_unsigned_ledger_has_no_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_ledger(path, key=None)
    data = json.loads(run("ledger", "prove", str(path), "0").output)
    assert data["checkpoint"] is None and data["tree_size"] == 5


def test_prove_an_entry_out_of_range_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_ledger(path)
    result = run("ledger", "prove", str(path), "5")
    assert result.exit_code == 1
    assert "no entry 5" in result.output and "0 to 4" in result.output


def test_verify_with_the_right_key_checks_the_checkpoint(tmp_path: Path) -> None:
    path, pub = tmp_path / "ledger.db", tmp_path / "ledger.pub"
    make_ledger(path)
    KEY.verifier.save(pub)
    result = run("ledger", "verify", str(path), "--key", str(pub))
    assert result.exit_code == 0, result.output
    assert "ok: 5 entries" in result.output and "signed checkpoint of 5 entries" in result.output


def test_verify_with_a_wrong_key_exits_1_naming_the_file(tmp_path: Path) -> None:
    path, pub = tmp_path / "ledger.db", tmp_path / "other.pub"
    make_ledger(path)
    SigningKey.generate("example.com/ledger").verifier.save(pub)
    result = run("ledger", "verify", str(path), "--key", str(pub))
    assert result.exit_code == 1
    assert str(path) in result.output and "not signed by the expected key" in result.output


def test_verify_with_a_key_fails_on_an_unsigned_ledger(tmp_path: Path) -> None:
    path, pub = tmp_path / "ledger.db", tmp_path / "ledger.pub"
    make_ledger(path, key=None)
    KEY.verifier.save(pub)
    result = run("ledger", "verify", str(path), "--key", str(pub))
    assert result.exit_code == 1 and "no signed checkpoint" in result.output


def test_verify_with_an_unreadable_key_file_is_a_config_error(tmp_path: Path) -> None:
    path, pub = tmp_path / "ledger.db", tmp_path / "ledger.pub"
    make_ledger(path)
    pub.write_text("not a key\n")
    result = run("ledger", "verify", str(path), "--key", str(pub))
    assert result.exit_code == 3 and str(pub) in result.output


def test_verify_without_a_key_still_checks_the_tree(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    make_ledger(path, key=None)
    result = run("ledger", "verify", str(path))
    assert result.exit_code == 0 and "tree root" in result.output
