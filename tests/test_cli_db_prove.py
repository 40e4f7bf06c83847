"""``guardrails db prove``: inclusion and consistency proofs from a real PostgreSQL ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pg_server
import pytest
from click.testing import CliRunner

import guardrails as gr
from guardrails._cli import main
from guardrails.ledger import ConsistencyProof, InclusionProof


@pytest.fixture
def pg_ledger(postgres_dsn: str, pg_schema: str) -> Iterator[gr.PostgresLedger]:
    """A PostgreSQL ledger of 7 entries on this test's schema."""
    ledger = gr.PostgresLedger(postgres_dsn, schema=pg_schema)
    for i in range(7):
        ledger.record_event("note", n=i)
    yield ledger
    ledger.close()


def _prove(dsn: str, schema: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["db", "prove", dsn, "--schema", schema, *args])


def _tables(dsn: str, schema: str) -> list[Any]:
    with pg_server.connect(dsn, schema) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
            (schema,)).fetchall()]
        return [(name, sorted(map(repr, conn.execute(f"SELECT * FROM {name}").fetchall())))
                for name in names]


def test_an_inclusion_proof_holds_for_the_entry_and_the_current_root(
        pg_ledger: gr.PostgresLedger, postgres_dsn: str, pg_schema: str) -> None:
    result = _prove(postgres_dsn, pg_schema, "--entry", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["checkpoint"] is None  # the ledger does not sign
    proof = InclusionProof.model_validate_json(json.dumps(
        {k: v for k, v in data.items() if k != "checkpoint"}))
    size, root = pg_ledger.root()
    assert (proof.leaf_index, proof.tree_size) == (3, size)
    proof.verify(root_hash=root)


def test_a_consistency_proof_connects_an_old_root_to_the_new_one(
        pg_ledger: gr.PostgresLedger, postgres_dsn: str, pg_schema: str) -> None:
    _, old_root = pg_ledger.root()
    for i in range(5):
        pg_ledger.record_event("later", n=i)
    result = _prove(postgres_dsn, pg_schema, "--from", "7")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    data.pop("checkpoint")
    proof = ConsistencyProof.model_validate_json(json.dumps(data))
    assert (proof.old_size, proof.new_size) == (7, 12) and proof.old_root == old_root
    assert proof.new_root == pg_ledger.root()[1]
    proof.verify()


def test_a_consistency_proof_between_two_past_sizes(
        pg_ledger: gr.PostgresLedger, postgres_dsn: str, pg_schema: str) -> None:
    result = _prove(postgres_dsn, pg_schema, "--from", "2", "--to", "5")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    data.pop("checkpoint")
    proof = ConsistencyProof.model_validate_json(json.dumps(data))
    assert (proof.old_size, proof.new_size) == (2, 5)
    proof.verify()


@pytest.mark.parametrize("args", [["--entry", "7"], ["--entry", "-1"], ["--from", "0"],
                                  ["--from", "5", "--to", "3"], ["--from", "2", "--to", "99"]])
def test_an_entry_or_size_out_of_range_exits_1_and_names_the_range(
        pg_ledger: gr.PostgresLedger, postgres_dsn: str, pg_schema: str, args: list[str]) -> None:
    result = _prove(postgres_dsn, pg_schema, *args)
    assert result.exit_code == 1
    assert "the ledger has 7" in result.output


def test_a_ledger_that_does_not_verify_gets_no_proof(
        pg_ledger: gr.PostgresLedger, postgres_dsn: str, pg_schema: str) -> None:
    with pg_server.connect(postgres_dsn, pg_schema) as conn:
        conn.execute("UPDATE guardrails_entries SET data = replace(data, '\"n\":2', '\"n\":9') "
                     "WHERE idx = 2")
    result = _prove(postgres_dsn, pg_schema, "--entry", "0")
    assert result.exit_code == 1
    assert "FAILED" in result.output and "entry 2" in result.output


def test_proving_writes_nothing(pg_ledger: gr.PostgresLedger, postgres_dsn: str,
                                pg_schema: str) -> None:
    before = _tables(postgres_dsn, pg_schema)
    assert _prove(postgres_dsn, pg_schema, "--entry", "1").exit_code == 0
    assert _prove(postgres_dsn, pg_schema, "--from", "3").exit_code == 0
    assert _tables(postgres_dsn, pg_schema) == before


@pytest.mark.parametrize("args", [[], ["--entry", "1", "--from", "2"], ["--to", "3"]])
def test_a_request_for_no_proof_or_two_is_a_usage_error(
        pg_ledger: gr.PostgresLedger, postgres_dsn: str, pg_schema: str, args: list[str]) -> None:
    assert _prove(postgres_dsn, pg_schema, *args).exit_code == 2


def test_a_signing_ledger_hands_out_its_checkpoint(postgres_dsn: str, pg_schema: str) -> None:
    key = gr.SigningKey.generate("test")
    ledger = gr.PostgresLedger(postgres_dsn, schema=pg_schema, signing_key=key)
    try:
        for i in range(3):
            ledger.record_event("note", n=i)
        note = ledger.latest_checkpoint()
    finally:
        ledger.close()
    result = _prove(postgres_dsn, pg_schema, "--entry", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    checkpoint = gr.Checkpoint.verify(data["checkpoint"], key.verifier)
    assert data["checkpoint"] == note and checkpoint.root_hash.hex() == data["root_hash"]
