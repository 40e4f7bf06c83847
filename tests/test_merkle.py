"""The RFC 6962 Merkle tree: known vectors, an independent verifier, and tampering."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails._errors import LedgerIntegrityError
from guardrails.ledger._merkle import (
    EMPTY_ROOT,
    ConsistencyProof,
    DictNodeStore,
    InclusionProof,
    MerkleTree,
    SQLiteNodeStore,
    compute_root,
    consistency_proof_length,
    inclusion_proof_length,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------------------
# An independent reference, written straight from RFC 6962 §2.1's recursive
# definitions. It shares no code with guardrails._merkle: only hashlib.


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """Largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH(D[n])."""
    if len(d) == 0:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_root_from_path(m: int, n: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """Invert PATH: the root that ``path`` proves ``leaf`` (a leaf hash) under, recursively."""
    if n == 1:
        assert not path, "path too long"
        return leaf
    assert path, "path too short"
    k = _k(n)
    *rest, sibling = path
    if m < k:
        return _h(b"\x01" + ref_root_from_path(m, k, leaf, rest) + sibling)
    return _h(b"\x01" + sibling + ref_root_from_path(m - k, n - k, leaf, rest))


def ref_roots_from_subproof(
    m: int, n: int, proof: Sequence[bytes], b: bool, old_root: bytes
) -> tuple[bytes, bytes]:
    """Invert SUBPROOF: (root of the old subtree, root of the new subtree), recursively."""
    if m == n:
        if b:
            assert not proof, "proof too long"
            return old_root, old_root
        assert len(proof) == 1, "proof has the wrong length"
        return proof[0], proof[0]
    assert proof, "proof too short"
    k = _k(n)
    *rest, last = proof
    if m <= k:
        old, new = ref_roots_from_subproof(m, k, rest, b, old_root)
        return old, _h(b"\x01" + new + last)
    old, new = ref_roots_from_subproof(m - k, n - k, rest, False, old_root)
    return _h(b"\x01" + last + old), _h(b"\x01" + last + new)


def ref_verify_inclusion(m: int, n: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    try:
        return ref_root_from_path(m, n, leaf, path) == root
    except AssertionError:
        return False


def ref_verify_consistency(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    try:
        return ref_roots_from_subproof(m, n, proof, True, old_root) == (old_root, new_root)
    except AssertionError:
        return False


# ---------------------------------------------------------------------------
# Known vectors: the certificate-transparency project's 8-leaf test data.

CT_LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [bytes.fromhex(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
CT_PATHS = [  # (leaf index, tree size, audit path)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def tree_of(leaves: Sequence[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for data in leaves:
        tree.append(data)
    return tree


def distinct_leaves(n: int, salt: bytes = b"") -> list[bytes]:
    # Ledger entries embed their index, so leaves never repeat; tests do the same.
    return [salt + b"entry-%d" % i for i in range(n)]


def flip(digest: bytes, bit: int = 0) -> bytes:
    return bytes([digest[0] ^ (1 << bit)]) + digest[1:]


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    expected = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert expected == EMPTY_ROOT
    assert MerkleTree().root == expected
    assert compute_root([]) == (0, expected)
    assert ref_mth([]) == expected


def test_ct_vector_roots() -> None:
    tree = MerkleTree()
    for size, (data, root) in enumerate(zip(CT_LEAVES, CT_ROOTS, strict=True), start=1):
        tree.append(data)
        assert tree.root == root, size
        assert ref_mth(CT_LEAVES[:size]) == root, size
    for size, root in enumerate(CT_ROOTS, start=1):
        assert tree.root_at(size) == root


def test_ct_vector_leaf_and_node_hashes() -> None:
    assert leaf_hash(b"") == CT_ROOTS[0]
    assert node_hash(leaf_hash(CT_LEAVES[0]), leaf_hash(CT_LEAVES[1])) == CT_ROOTS[1]


@pytest.mark.parametrize(("index", "size", "path"), CT_PATHS)
def test_ct_vector_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    tree = tree_of(CT_LEAVES)
    proof = tree.inclusion_proof(index, size)
    assert [p.hex() for p in proof] == path
    verify_inclusion(index, size, leaf_hash(CT_LEAVES[index]), proof, CT_ROOTS[size - 1])
    assert ref_verify_inclusion(index, size, leaf_hash(CT_LEAVES[index]), proof,
                                CT_ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_vector_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    tree = tree_of(CT_LEAVES)
    produced = tree.consistency_proof(old, new)
    assert [p.hex() for p in produced] == proof
    verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], produced)
    assert ref_verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], produced)


# ---------------------------------------------------------------------------
# Properties against the reference


def test_every_proof_for_every_size_up_to_40_matches_the_rfc() -> None:
    leaves = distinct_leaves(40)
    tree = tree_of(leaves)
    for size in range(1, 41):
        root = tree.root_at(size)
        assert root == ref_mth(leaves[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == ref_path(index, leaves[:size])
            assert len(proof) == inclusion_proof_length(index, size)
            verify_inclusion(index, size, leaf_hash(leaves[index]), proof, root)
        for old in range(0, size + 1):
            proof = tree.consistency_proof(old, size)
            assert proof == (ref_subproof(old, leaves[:size], True) if old else [])
            assert len(proof) == consistency_proof_length(old, size)
            verify_consistency(old, size, tree.root_at(old), root, proof)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.binary(max_size=4))
def test_every_inclusion_proof_verifies(n: int, salt: bytes) -> None:
    leaves = distinct_leaves(n, salt)
    tree = tree_of(leaves)
    root = tree.root
    assert root == ref_mth(leaves)
    for index in range(n):
        proof = tree.inclusion_proof(index)
        leaf = leaf_hash(leaves[index])
        verify_inclusion(index, n, leaf, proof, root)
        assert ref_verify_inclusion(index, n, leaf, proof, root)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.binary(max_size=4))
def test_every_consistency_proof_verifies(n: int, salt: bytes) -> None:
    leaves = distinct_leaves(n, salt)
    tree = tree_of(leaves)
    new_root = tree.root
    for old in range(1, n + 1):
        proof = tree.consistency_proof(old)
        old_root = tree.root_at(old)
        verify_consistency(old, n, old_root, new_root, proof)
        assert ref_verify_consistency(old, n, old_root, new_root, proof)
    verify_consistency(0, n, EMPTY_ROOT, new_root, tree.consistency_proof(0))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_tampered_inclusion_never_verifies(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=300), label="n")
    index = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    tree = tree_of(distinct_leaves(n))
    leaf, root = tree.leaf(index), tree.root
    proof = tree.inclusion_proof(index)
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    tampered: list[tuple[int, bytes, list[bytes], bytes]] = [
        (index, flip(leaf, bit), proof, root),
        (index, leaf, proof, flip(root, bit)),
        (index, leaf_hash(b"entry-%d!" % index), proof, root),
    ]
    if proof:
        at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="at")
        tampered.append((index, leaf, [*proof[:at], flip(proof[at], bit), *proof[at + 1:]],
                         root))
        tampered.append((index, leaf, proof[:-1], root))
        tampered.append((index, leaf, proof[::-1], root) if len(set(proof)) > 1 else
                        (index, leaf, [*proof, proof[0]], root))
    else:
        tampered.append((index, leaf, [root], root))
    other = data.draw(st.integers(min_value=0, max_value=n - 1), label="other")
    if other != index:
        tampered.append((other, leaf, proof, root))
    for claim_index, claim_leaf, claim_proof, claim_root in tampered:
        with pytest.raises(LedgerIntegrityError):
            verify_inclusion(claim_index, n, claim_leaf, claim_proof, claim_root)
        assert not ref_verify_inclusion(claim_index, n, claim_leaf, claim_proof, claim_root)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_tampered_consistency_never_verifies(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=2, max_value=300), label="n")
    old = data.draw(st.integers(min_value=1, max_value=n - 1), label="old")
    tree = tree_of(distinct_leaves(n))
    old_root, new_root = tree.root_at(old), tree.root
    proof = tree.consistency_proof(old)
    bit = data.draw(st.integers(min_value=0, max_value=7), label="bit")
    at = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="at")
    tampered = [
        (old, n, flip(old_root, bit), new_root, proof),
        (old, n, old_root, flip(new_root, bit), proof),
        (old, n, old_root, new_root, [*proof[:at], flip(proof[at], bit), *proof[at + 1:]]),
        (old, n, old_root, new_root, proof[:-1]),
        (old, n, old_root, new_root, [*proof, proof[0]]),
        (old, n, new_root, old_root, proof),
    ]
    for m, size, claim_old, claim_new, claim_proof in tampered:
        with pytest.raises(LedgerIntegrityError):
            verify_consistency(m, size, claim_old, claim_new, claim_proof)
        assert not ref_verify_consistency(m, size, claim_old, claim_new, claim_proof)
    with pytest.raises(LedgerIntegrityError):
        verify_consistency(n, old, new_root, old_root, proof)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_rewritten_history_is_detected(data: st.DataObject) -> None:
    """A different tree that looks consistent on its own never extends the trusted root."""
    old = data.draw(st.integers(min_value=1, max_value=200), label="old")
    n = data.draw(st.integers(min_value=old, max_value=260), label="n")
    changed = data.draw(st.integers(min_value=0, max_value=old - 1), label="changed")
    honest = distinct_leaves(n)
    trusted_root = tree_of(honest[:old]).root
    kind = data.draw(st.sampled_from(["edit", "remove", "insert", "swap"]), label="kind")
    forged = list(honest)
    if kind == "edit":
        forged[changed] = b"forged"
    elif kind == "remove":
        del forged[changed]
        forged.append(b"padding")
    elif kind == "insert":
        forged.insert(changed, b"inserted")
    else:
        other = (changed + 1) % n
        forged[changed], forged[other] = forged[other], forged[changed]
    forged_tree = tree_of(forged)
    if kind == "swap" and forged[:old] == honest[:old]:
        return  # swapped two leaves both past the trusted size: no history changed
    assert forged_tree.root_at(old) != trusted_root
    proof = forged_tree.consistency_proof(old)
    with pytest.raises(LedgerIntegrityError):
        verify_consistency(old, forged_tree.size, trusted_root, forged_tree.root, proof)
    assert not ref_verify_consistency(old, forged_tree.size, trusted_root, forged_tree.root,
                                      proof)


def test_truncation_is_detected() -> None:
    tree = tree_of(distinct_leaves(20))
    with pytest.raises(LedgerIntegrityError, match="shrank"):
        verify_consistency(20, 19, tree.root, tree.root_at(19), [])


def test_proof_length_functions_reject_out_of_range() -> None:
    with pytest.raises(ValueError):
        inclusion_proof_length(3, 3)
    with pytest.raises(ValueError):
        consistency_proof_length(4, 3)
    assert consistency_proof_length(0, 5) == consistency_proof_length(5, 5) == 0


def test_malformed_proof_inputs_are_integrity_errors() -> None:
    tree = tree_of(distinct_leaves(5))
    proof = tree.inclusion_proof(2)
    with pytest.raises(LedgerIntegrityError, match="not in a tree"):
        verify_inclusion(5, 5, tree.leaf(2), proof, tree.root)
    with pytest.raises(LedgerIntegrityError, match="32-byte"):
        verify_inclusion(2, 5, tree.leaf(2)[:31], proof, tree.root)
    with pytest.raises(LedgerIntegrityError, match="32-byte"):
        verify_inclusion(2, 5, tree.leaf(2), [*proof[:-1], b"x"], tree.root)
    with pytest.raises(LedgerIntegrityError, match="has 2 hashes; a valid one has 3") as info:
        verify_inclusion(2, 5, tree.leaf(2), proof[:2], tree.root)
    assert info.value.index == 2
    with pytest.raises(LedgerIntegrityError, match="a tree of 0 entries"):
        verify_consistency(0, 5, tree.root, tree.root, [])
    with pytest.raises(LedgerIntegrityError, match="rewritten"):
        verify_consistency(5, 5, tree.root, EMPTY_ROOT, [])
    assert root_from_inclusion_proof(2, 5, tree.leaf(2), proof) == tree.root


def test_tree_refuses_out_of_range_requests() -> None:
    tree = tree_of(distinct_leaves(4))
    for call in (lambda: tree.inclusion_proof(4), lambda: tree.inclusion_proof(0, 5),
                 lambda: tree.consistency_proof(5), lambda: tree.consistency_proof(3, 2),
                 lambda: tree.root_at(5), lambda: tree.leaf(-1), lambda: MerkleTree(size=-1)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(LedgerIntegrityError):
        tree.append_hash(b"short")


# ---------------------------------------------------------------------------
# Storage


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=600))
def test_reopening_a_store_gives_the_same_tree(n: int, extra: int) -> None:
    leaves = distinct_leaves(n + extra)
    tree = tree_of(leaves[:n])
    reopened = MerkleTree(tree.store, size=n)
    assert reopened.root == tree.root
    for data in leaves[n:]:
        reopened.append(data)
    assert reopened.root == ref_mth(leaves) == compute_root(map(leaf_hash, leaves))[1]
    # Every complete subtree and nothing else is stored: 2n minus the set bits of n.
    total = n + extra
    assert isinstance(reopened.store, DictNodeStore)
    assert len(reopened.store) == 2 * total - total.bit_count()


def test_extend_hashes_matches_appending_one_by_one() -> None:
    leaves = distinct_leaves(2_345)
    batched = MerkleTree()
    batched.extend_hashes(map(leaf_hash, leaves), batch=100)
    single = tree_of(leaves)
    assert batched.root == single.root
    assert isinstance(batched.store, DictNodeStore) and isinstance(single.store, DictNodeStore)
    assert batched.store.nodes == single.store.nodes


def test_missing_node_is_a_clear_error() -> None:
    tree = tree_of(distinct_leaves(9))
    assert isinstance(tree.store, DictNodeStore)
    del tree.store.nodes[(3, 0)]
    with pytest.raises(LedgerIntegrityError,
                       match=r"node 3/0 \(entries 0 to 7\) is missing") as info:
        MerkleTree(tree.store, size=8)
    assert info.value.index == 0
    # The open tree keeps its root in memory, but nothing that needs the node is served.
    assert tree.root == ref_mth(distinct_leaves(9))
    with pytest.raises(LedgerIntegrityError, match="missing"):
        tree.inclusion_proof(8)
    with pytest.raises(LedgerIntegrityError, match="missing"):
        tree.root_at(8)


def test_check_against_finds_the_first_bad_node() -> None:
    leaves = distinct_leaves(13)
    tree = tree_of(leaves)
    hashes = [leaf_hash(x) for x in leaves]
    tree.check_against(hashes)
    assert isinstance(tree.store, DictNodeStore)

    altered = list(hashes)
    altered[9] = leaf_hash(b"altered")
    with pytest.raises(LedgerIntegrityError, match="node 0/9") as info:
        tree.check_against(altered)
    assert info.value.index == 9

    tree.store.nodes[(2, 1)] = b"\x00" * 32  # a forged interior node over entries 4..7
    with pytest.raises(LedgerIntegrityError, match=r"node 2/1 \(entries 4 to 7\)") as info:
        tree.check_against(hashes)
    assert info.value.index == 4

    fresh = tree_of(leaves)
    with pytest.raises(LedgerIntegrityError, match="only 12 entries"):
        fresh.check_against(hashes[:-1])
    with pytest.raises(LedgerIntegrityError, match="more entries"):
        fresh.check_against([*hashes, leaf_hash(b"extra")])


class CountingStore(DictNodeStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, level: int, index: int) -> bytes | None:
        self.reads += 1
        return super().get(level, index)


def test_proofs_cost_logarithmic_lookups() -> None:
    store = CountingStore()
    tree = MerkleTree(store)
    n = (1 << 16) + 12_345
    tree.extend_hashes(leaf_hash(b"%d" % i) for i in range(n))
    assert store.reads == 0  # appending never reads
    bound = 2 * n.bit_length() + 2
    for index in (0, 1, 12_345, 1 << 15, (1 << 16) - 1, 1 << 16, n - 2, n - 1):
        store.reads = 0
        proof = tree.prove_inclusion(index)
        assert store.reads <= bound, (index, store.reads)
        proof.verify()
    for old in (1, 2, 3, 1 << 15, (1 << 16) + 1, n - 1):
        store.reads = 0
        tree.prove_consistency(old).verify()
        assert store.reads <= 2 * bound, (old, store.reads)


def test_sqlite_node_store_round_trip_and_rollback() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    store = SQLiteNodeStore(conn)
    store.create_table()
    tree = MerkleTree(store)
    leaves = distinct_leaves(37)
    conn.execute("BEGIN")
    for data in leaves[:30]:
        tree.append(data)
    conn.execute("COMMIT")

    conn.execute("BEGIN")
    for data in leaves[30:]:
        tree.append(data)
    conn.execute("ROLLBACK")
    tree.reset(30)  # what a ledger does after a rolled-back append
    assert tree.root == ref_mth(leaves[:30])

    for data in leaves[30:]:
        tree.append(data)
    reopened = MerkleTree(SQLiteNodeStore(conn), size=37)
    assert reopened.root == ref_mth(leaves)
    reopened.prove_inclusion(33).verify(leaf_data=leaves[33], root_hash=ref_mth(leaves))

    stale = MerkleTree(SQLiteNodeStore(conn), size=36)  # a writer that missed an append
    with pytest.raises(sqlite3.IntegrityError):
        stale.append(b"divergent")

    with pytest.raises(ValueError):
        SQLiteNodeStore(conn, table="nodes; DROP TABLE x")


def test_proof_models_round_trip_as_json() -> None:
    leaves = distinct_leaves(11)
    tree = tree_of(leaves)
    proof = tree.prove_inclusion(6)
    text = proof.model_dump_json()
    assert tree.root.hex() in text
    again = InclusionProof.model_validate_json(text)
    assert again == proof
    again.verify(root_hash=tree.root, leaf_data=leaves[6])
    with pytest.raises(LedgerIntegrityError, match="was altered"):
        again.verify(leaf_data=b"entry-6 changed")
    with pytest.raises(LedgerIntegrityError, match="trusted root"):
        again.verify(root_hash=tree.root_at(10))
    assert ref_verify_inclusion(6, 11, again.leaf_hash, again.hashes, tree.root)

    consistency = tree.prove_consistency(5)
    assert ConsistencyProof.model_validate_json(consistency.model_dump_json()) == consistency
    consistency.verify()
    forged = consistency.model_copy(update={"old_root": flip(consistency.old_root)})
    with pytest.raises(LedgerIntegrityError):
        forged.verify()
