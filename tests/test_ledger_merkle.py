"""The ledger's RFC 6962 Merkle tree, inclusion proofs and signed checkpoints, per backend.

Proofs are checked with a verifier written here from the RFC's definitions
(hashlib only), not with the library's own.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pg_server
import pytest

import guardrails as gr
from guardrails.ledger._checkpoint import Checkpoint, SigningKey
from guardrails.ledger._ledger import _SQLiteTx
from guardrails.ledger._postgres import _PostgresTx

# -- an independent verifier, from RFC 6962 §2.1 and RFC 9162 §2.1.3.2 -------------------


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of the leaf *data* ``leaves``."""
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2: the root an audit path leads to, or ``None`` if it cannot."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, sha(b"\x00" + leaf)
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = sha(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def entry_bytes(entry: gr.LedgerEntry) -> bytes:
    """An entry's canonical JSON, rebuilt by hand; its SHA-256 must be the entry's hash."""
    record = {"index": entry.index, "type": entry.type, "body": entry.body,
              "prev_hash": entry.prev_hash}
    data = json.dumps(record, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    assert hashlib.sha256(data).hexdigest() == entry.hash
    return data


# -- fixtures ------------------------------------------------------------------------------

STATE_0: dict[str, Any] = {"prompt": "v0"}
V0 = gr.state_version(STATE_0)
KEY = SigningKey.generate("example.com/ledger")
OTHER_KEY = SigningKey.generate("example.com/ledger")

Make = Callable[..., gr.Ledger]


@pytest.fixture
def make(ledger_factory: Any) -> Make:
    """Opens ledgers of each backend (memory, SQLite, PostgreSQL); keywords go to the constructor.

    For SQLite and PostgreSQL every call opens the same store again."""
    return cast(Make, ledger_factory)


def fill(ledger: gr.Ledger, events: int, tag: str = "x") -> None:
    """A genesis entry, then ``events`` events."""
    ledger.put_state(STATE_0)
    ledger.promote(gr.Decision.accept(candidate=V0, kind="genesis", source="operator",
                                      anchor=True), None)
    for number in range(events):
        ledger.record_event("note", n=number, tag=tag)


# -- tree and proofs -----------------------------------------------------------------------


def test_every_entry_has_a_proof_an_independent_verifier_accepts(make: Make) -> None:
    """At every size up to 18, every entry's proof leads to the root computed from the entries."""
    ledger = make()
    assert ledger.root() == (0, sha(b""))
    fill(ledger, 0)
    for _ in range(17):
        data = [entry_bytes(e) for e in ledger.entries()]
        size, root = ledger.root()
        assert size == len(data) and root == mth(data)
        for index, leaf in enumerate(data):
            proof = ledger.prove(index)
            assert (proof.leaf_index, proof.tree_size, proof.root_hash) == (index, size, root)
            assert proof.leaf_hash == sha(b"\x00" + leaf)
            assert root_from_path(index, size, leaf, list(proof.hashes)) == root
            # Any other leaf, or a proof with one hash changed, leads elsewhere.
            assert root_from_path(index, size, leaf + b" ", list(proof.hashes)) != root
            if proof.hashes:
                bent = [bytes([proof.hashes[0][0] ^ 1]) + proof.hashes[0][1:],
                        *proof.hashes[1:]]
                assert root_from_path(index, size, leaf, bent) != root
        ledger.record_event("more")
    assert ledger.verify().ok


def test_proofs_serialise_as_hex_json(make: Make) -> None:
    """A proof round-trips through JSON with lowercase hex hashes."""
    ledger = make()
    fill(ledger, 4)
    proof = ledger.prove(2)
    data = json.loads(proof.model_dump_json())
    assert data["leaf_hash"] == proof.leaf_hash.hex() and len(data["hashes"]) == 3
    assert type(proof).model_validate_json(proof.model_dump_json()) == proof


@pytest.mark.parametrize("index", [-1, 5, 100])
def test_prove_out_of_range_is_an_index_error(make: Make, index: int) -> None:
    ledger = make()
    fill(ledger, 4)
    with pytest.raises(IndexError, match="no entry"):
        ledger.prove(index)


def test_verify_recomputes_the_tree_and_names_the_entry(make: Make, tmp_path: Path) -> None:
    """A stored tree node that the entries do not support fails verify(), naming the entry."""
    ledger = make()
    fill(ledger, 6)
    assert ledger.verify().ok
    forged = b"\x07" * 32
    if isinstance(ledger, gr.MemoryLedger):
        ledger._tree.store.nodes[(0, 3)] = forged  # type: ignore[attr-defined]
    elif isinstance(ledger, gr.PostgresLedger):
        with pg_server.connect(ledger.dsn, ledger.schema) as pg:
            pg.execute("UPDATE guardrails_merkle_nodes SET hash=%s WHERE level=0 AND idx=3",
                       (forged,))
    else:
        assert isinstance(ledger, gr.SQLiteLedger)
        with sqlite3.connect(ledger.path) as conn:
            conn.execute("UPDATE guardrails_merkle_nodes SET hash=? WHERE level=0 AND idx=3",
                         (forged,))
    report = ledger.verify()
    assert not report.ok and report.index == 3
    assert "Merkle tree" in str(report.problem) and "entries 3 to 3" in str(report.problem)


# -- signed checkpoints --------------------------------------------------------------------


def test_each_append_stores_a_signed_checkpoint_of_the_tree(make: Make) -> None:
    """With a key, the latest checkpoint is signed, for this ledger's origin, size and root."""
    ledger = make(signing_key=KEY)
    assert ledger.latest_checkpoint() is None
    fill(ledger, 3)
    note = ledger.latest_checkpoint()
    assert note is not None
    assert isinstance(ledger, gr.MemoryLedger | gr.SQLiteLedger | gr.PostgresLedger)
    checkpoint = Checkpoint.verify(note, KEY.verifier, origin=ledger.origin)
    assert ledger.origin.startswith("guardrails/")
    assert (checkpoint.size, checkpoint.root_hash) == ledger.root()
    assert ledger.verify().ok


def test_an_unsigned_ledger_has_no_checkpoint(make: Make) -> None:
    ledger = make()
    fill(ledger, 2)
    assert ledger.latest_checkpoint() is None
    assert ledger.verify().ok


def build(path: Path, events: int, tag: str, key: SigningKey | None = None) -> None:
    ledger = gr.SQLiteLedger(path, signing_key=key)
    fill(ledger, events, tag)
    ledger.close()


def copy_meta(source: Path, target: Path, *keys: str) -> None:
    with sqlite3.connect(source) as conn:
        values = [(k, conn.execute("SELECT value FROM guardrails_meta WHERE key=?",
                                   (k,)).fetchone()[0]) for k in keys]
    with sqlite3.connect(target) as conn:
        conn.executemany("INSERT OR REPLACE INTO guardrails_meta VALUES (?, ?)", values)


def where(ledger: gr.Ledger) -> str:
    """How a stored ledger names itself in errors: its file, or its URL and schema."""
    if isinstance(ledger, gr.PostgresLedger):
        return str(ledger.schema)
    assert isinstance(ledger, gr.SQLiteLedger)
    return str(ledger.path)


def execute(ledger: gr.Ledger, statement: str) -> None:
    """Run SQL (no parameters) on a stored ledger behind its back."""
    if isinstance(ledger, gr.PostgresLedger):
        with pg_server.connect(ledger.dsn, ledger.schema) as pg:
            pg.execute(statement)
        return
    assert isinstance(ledger, gr.SQLiteLedger)
    with sqlite3.connect(ledger.path) as conn:
        conn.execute(statement)


def test_reopening_a_signed_ledger_checks_its_checkpoint(store_factory: Any) -> None:
    """Reopened with or without the signing key, an intact signed ledger opens and appends."""
    fill(store_factory(signing_key=KEY), 5, "real")
    reopened = store_factory()
    assert reopened.verifier_key == KEY.verifier
    reopened.record_event("unsigned append")
    again = store_factory(signing_key=KEY, verifier_key=KEY.verifier)
    again.record_event("signed append")
    assert again.verify().ok


def test_rewritten_history_is_refused_on_open(tmp_path: Path) -> None:
    """A different ledger of the same size, with a valid chain and tree and the original's
    checkpoint, origin and key copied in, is refused on open, naming the file."""
    real, forged = tmp_path / "real.db", tmp_path / "forged.db"
    build(real, 5, "real", KEY)
    build(forged, 5, "forged")  # the forger has no signing key
    plain = gr.SQLiteLedger(forged)
    assert plain.verify().ok and len(plain) == 6  # keyless checks cannot tell
    plain.close()
    copy_meta(real, forged, "origin", "checkpoint", "checkpoint_key")
    with pytest.raises(gr.LedgerIntegrityError, match="rewritten") as caught:
        gr.SQLiteLedger(forged)
    assert str(forged) in str(caught.value)


def test_truncated_history_is_refused_on_open(tmp_path: Path) -> None:
    real, forged = tmp_path / "real.db", tmp_path / "forged.db"
    build(real, 5, "real", KEY)
    build(forged, 3, "real")
    copy_meta(real, forged, "origin", "checkpoint", "checkpoint_key")
    with pytest.raises(gr.LedgerIntegrityError, match="were removed") as caught:
        gr.SQLiteLedger(forged)
    assert str(forged) in str(caught.value)


def test_a_rewritten_file_is_refused_against_a_checkpoint_kept_elsewhere(tmp_path: Path) -> None:
    """With the key and a checkpoint held outside the file, even a wholesale rewrite
    (its own origin and no checkpoint) is refused."""
    path = tmp_path / "ledger.db"
    build(path, 5, "real", KEY)
    ledger = gr.SQLiteLedger(path)
    kept = ledger.latest_checkpoint()
    ledger.close()
    path.unlink()
    build(path, 5, "forged")
    with pytest.raises(gr.LedgerIntegrityError, match="another ledger") as caught:
        gr.SQLiteLedger(path, verifier_key=KEY.verifier, trusted_checkpoint=kept)
    assert str(path) in str(caught.value)
    with pytest.raises(gr.LedgerIntegrityError, match="no signed checkpoint"):
        gr.SQLiteLedger(path, verifier_key=KEY.verifier)


def test_a_wrong_key_is_a_clear_error_naming_the_file(store_factory: Any) -> None:
    ledger = store_factory(signing_key=KEY)
    fill(ledger, 2, "real")
    with pytest.raises(gr.LedgerIntegrityError, match="not signed by the expected key") as caught:
        store_factory(verifier_key=OTHER_KEY.verifier)
    assert where(ledger) in str(caught.value)
    with pytest.raises(gr.ConfigError, match="not by the signing key given"):
        store_factory(signing_key=OTHER_KEY)


def test_a_forged_checkpoint_signature_is_refused(store_factory: Any) -> None:
    ledger = store_factory(signing_key=KEY)
    fill(ledger, 2, "real")
    execute(ledger, "UPDATE guardrails_meta SET value=replace(value, chr(10) || '3' || "
                    "chr(10), chr(10) || '2' || chr(10)) WHERE key='checkpoint'"
            if isinstance(ledger, gr.PostgresLedger) else
            "UPDATE guardrails_meta SET value=replace(value, char(10) || '3' || "
            "char(10), char(10) || '2' || char(10)) WHERE key='checkpoint'")
    with pytest.raises(gr.LedgerIntegrityError, match="does not verify") as caught:
        store_factory()
    assert where(ledger) in str(caught.value)


# -- stored ledgers: SQLite specifics, then both stores ------------------------------------


def test_a_ledger_from_before_the_tree_gets_it_built_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    build(path, 6, "old")
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE guardrails_merkle_nodes")
        conn.execute("UPDATE guardrails_meta SET value='1' WHERE key='schema_version'")
    ledger = gr.SQLiteLedger(path)
    data = [entry_bytes(e) for e in ledger.entries()]
    assert ledger.root() == (7, mth(data))
    ledger.record_event("after the upgrade")
    assert ledger.verify().ok
    ledger.close()


def test_a_rolled_back_append_leaves_no_leaf(store_factory: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails after its leaf was appended rolls the tree back with the entry."""
    ledger = store_factory()
    fill(ledger, 2)
    before = ledger.root()

    class DiskFull(Exception):
        pass

    def fail(self: Any, pending: gr.PendingApproval) -> None:
        raise DiskFull("disk full")

    monkeypatch.setattr(_PostgresTx if isinstance(ledger, gr.PostgresLedger) else _SQLiteTx,
                        "put_pending", fail)
    pending = gr.PendingApproval(id="p", parent=V0, candidate=V0, kind="state", source="model",
                                 proposal={}, findings=[], requested_at=0.0)
    finding = gr.Finding(check="invariant", passed=False, message="no")
    with pytest.raises(DiskFull):
        ledger.record(gr.Decision.reject([finding], parent=V0), pending=pending)
    assert ledger.root() == before and len(ledger) == 3
    monkeypatch.undo()
    ledger.record_event("next")
    data = [entry_bytes(e) for e in ledger.entries()]
    assert ledger.root() == (len(data), mth(data)) and ledger.verify().ok


def test_two_handles_share_one_tree(store_factory: Any) -> None:
    """Appends through another handle (another process) are in this handle's proofs."""
    first = store_factory(signing_key=KEY)
    second = store_factory(signing_key=KEY)
    fill(first, 1)
    second.record_event("from the second handle")
    first.record_event("from the first handle")
    second.record_event("from the second handle again")
    data = [entry_bytes(e) for e in first.entries()]
    for ledger in (first, second):
        assert ledger.root() == (len(data), mth(data))
        proof = ledger.prove(len(data) - 1)
        assert root_from_path(len(data) - 1, len(data), data[-1], list(proof.hashes)) == mth(data)
        assert ledger.verify().ok
