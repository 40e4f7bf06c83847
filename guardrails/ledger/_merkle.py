"""An RFC 6962 Merkle tree over the ledger's entries: roots, inclusion and consistency proofs.

Definitions (RFC 6962 §2.1, unchanged in RFC 9162 §2.1.1):

* the hash of an empty tree is SHA-256 of the empty string;
* a leaf's hash is ``SHA-256(0x00 || leaf bytes)``;
* an interior node's hash is ``SHA-256(0x01 || left || right)``;
* a tree of ``n > 1`` leaves splits at ``k``, the largest power of two
  smaller than ``n``: the left subtree holds leaves ``[0, k)``, the right
  ``[k, n)``.

For the ledger, a leaf's bytes are the entry's canonical JSON, the same
bytes the hash chain hashes. Anyone holding the entries can recompute every
root and check every proof with nothing but SHA-256.

``MerkleTree`` keeps the hash of every *complete* subtree (a node that will
never change once its last leaf is appended) in a ``NodeStore``, addressed by
``(level, index)``: the node at ``level`` and ``index`` covers leaves
``[index * 2**level, (index + 1) * 2**level)``. Appending writes the new leaf
and the nodes it completes (amortised two, at most ``log2 n + 1``) and reads
nothing; a root or a proof is ``O(log n)`` lookups. The verification
functions here need no tree and no store.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from .._errors import LedgerIntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the tree of no leaves (RFC 6962 §2.1: the hash of an empty string)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 hash of one leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``): RFC 6962's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _short(digest: bytes) -> str:
    return digest.hex()[:12]


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise LedgerIntegrityError(
            f"{what} is not a {HASH_SIZE}-byte SHA-256 hash "
            f"(got {len(value) if isinstance(value, bytes | bytearray) else type(value).__name__})"
        )


# ---------------------------------------------------------------------------
# Node storage


@runtime_checkable
class NodeStore(Protocol):
    """Where a ``MerkleTree`` keeps the hashes of its complete subtrees.

    ``(level, index)`` names the node over leaves
    ``[index * 2**level, (index + 1) * 2**level)``; level 0 holds leaf hashes.
    Nodes are written once and never change. A store need not be
    thread-safe: the tree's owner serialises access.
    """

    def get(self, level: int, index: int) -> bytes | None:
        """The stored hash, or ``None`` if there is none."""
        ...

    def put(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Store ``(level, index, hash)`` triples; called with the nodes one append completes."""
        ...


class DictNodeStore:
    """Nodes in a dict: the store of ``MemoryLedger`` and of scratch trees."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes | None:
        return self.nodes.get((level, index))

    def put(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        for level, index, digest in nodes:
            self.nodes[(level, index)] = digest

    def __len__(self) -> int:
        return len(self.nodes)


class SQLiteNodeStore:
    """Nodes in a table of a SQLite connection the caller owns.

    Writes go through the caller's connection without committing, so a
    ledger that appends an entry and its nodes in one transaction keeps them
    atomic; after a rollback, call ``MerkleTree.reset``. A node written
    twice raises ``sqlite3.IntegrityError``: it means two writers disagree
    about the tree, which must never pass silently.
    """

    def __init__(self, conn: sqlite3.Connection, table: str = "guardrails_merkle_nodes") -> None:
        # The table name is interpolated into SQL, so only plain identifiers are allowed.
        if not table.replace("_", "").isalnum() or not table.isascii():
            raise ValueError(f"not a plain SQL table name: {table!r}")
        self.conn = conn
        self.table = table

    def create_table(self) -> None:
        """Create the table if it does not exist (idempotent; does not commit)."""
        # WITHOUT ROWID: the primary key is the only lookup, so the table is one B-tree.
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (level INTEGER NOT NULL, "
            "idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID"
        )

    def get(self, level: int, index: int) -> bytes | None:
        row = self.conn.execute(
            f"SELECT hash FROM {self.table} WHERE level=? AND idx=?", (level, index)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.conn.executemany(f"INSERT INTO {self.table} VALUES (?, ?, ?)", nodes)


# ---------------------------------------------------------------------------
# Proof shapes, computed from sizes alone


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes an inclusion proof of leaf ``index`` in a tree of ``size`` has."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    # Levels where the leaf's path and the last leaf's path share an ancestor
    # with a full sibling ("inner"), plus the right-border subtrees above them.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes a consistency proof from ``old_size`` to ``new_size`` has."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return 0
    # Walk RFC 6962's SUBPROOF recursion without hashing: one hash per level,
    # plus the old tree's own root when it is not a left-edge complete subtree.
    count, m, n, complete = 0, old_size, new_size, True
    while m != n:
        k = _split(n)
        count += 1
        if m <= k:
            n = k
        else:
            m, n, complete = m - k, n - k, False
    return count + (0 if complete else 1)


# ---------------------------------------------------------------------------
# Verification (RFC 9162 §2.1.3.2 and §2.1.4.2; equivalent to RFC 6962's definitions)


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof leads to from the leaf hash ``leaf``.

    Raises ``LedgerIntegrityError`` (with ``index``) if the proof has the
    wrong shape for ``index`` and ``size``. The caller must still compare
    the result with a trusted root: ``verify_inclusion`` does both.
    """
    if not 0 <= index < size:
        raise LedgerIntegrityError(
            f"inclusion proof names entry {index}, which is not in a tree of {size} entries",
            index=index,
        )
    expected = inclusion_proof_length(index, size)
    if len(proof) != expected:
        raise LedgerIntegrityError(
            f"inclusion proof for entry {index} of {size} has {len(proof)} hashes; "
            f"a valid one has {expected}",
            index=index,
        )
    _check_hash(leaf, f"leaf hash of entry {index}")
    for position, sibling in enumerate(proof):
        _check_hash(sibling, f"hash {position} of the inclusion proof for entry {index}")
    fn, sn, r = index, size - 1, bytes(leaf)
    for sibling in proof:
        if fn & 1 or fn == sn:
            r = node_hash(sibling, r)
            # A right-border node with no right sibling moves up levels for free.
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, sibling)
        fn, sn = fn >> 1, sn >> 1
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that leaf hash ``leaf`` is entry ``index`` of the tree of ``size`` with ``root``.

    Returns ``None`` on success and raises ``LedgerIntegrityError`` (with
    ``index``) otherwise, saying whether the proof is malformed or leads
    elsewhere. ``leaf`` is ``leaf_hash(entry bytes)``.
    """
    _check_hash(root, "root hash")
    computed = root_from_inclusion_proof(index, size, leaf, proof)
    if computed != root:
        raise LedgerIntegrityError(
            f"inclusion proof for entry {index} of {size} leads to root {_short(computed)}, "
            f"not {_short(root)}: the entry, the proof or the root was altered",
            index=index,
        )


def _consistency_roots(old_size: int, new_size: int, old_root: bytes, proof: Sequence[bytes]
                       ) -> tuple[bytes, bytes, int]:
    """The old and new roots a consistency proof leads to (RFC 9162 section 2.1.4.2), and
    the remaining index, which is 0 for a proof of the right length."""
    path = list(proof)
    # When the old tree is a complete left subtree, RFC 6962 leaves its root
    # out of the proof, since the verifier already has it.
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as RFC 9162 states it
            raise LedgerIntegrityError("consistency proof is longer than the trees allow")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(node, fr), node_hash(node, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, node)
        fn, sn = fn >> 1, sn >> 1
    return fr, sr, sn


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    That is: its first ``old_size`` leaves are exactly the leaves of the tree
    with ``old_root``, so nothing before ``old_size`` was changed, removed
    or reordered. Returns ``None`` on success and raises
    ``LedgerIntegrityError`` otherwise. ``old_size == 0`` needs an empty
    proof and ``old_root == EMPTY_ROOT``; equal sizes need an empty proof
    and equal roots.
    """
    _check_hash(old_root, f"root hash of the tree of size {old_size}")
    _check_hash(new_root, f"root hash of the tree of size {new_size}")
    if not 0 <= old_size <= new_size:
        raise LedgerIntegrityError(
            f"the tree shrank from {old_size} to {new_size} entries (truncated or rewritten)",
            index=new_size if new_size >= 0 else None,
        )
    expected = consistency_proof_length(old_size, new_size)
    if len(proof) != expected:
        raise LedgerIntegrityError(
            f"consistency proof from {old_size} to {new_size} entries has {len(proof)} "
            f"hashes; a valid one has {expected}"
        )
    for position, node in enumerate(proof):
        _check_hash(node, f"hash {position} of the consistency proof")
    if old_size == 0:
        if old_root != EMPTY_ROOT:
            raise LedgerIntegrityError(
                f"a tree of 0 entries has root {_short(EMPTY_ROOT)}, not {_short(old_root)}"
            )
        return
    if old_size == new_size:
        if old_root != new_root:
            raise LedgerIntegrityError(
                f"two trees of {old_size} entries have different roots {_short(old_root)} "
                f"and {_short(new_root)}: history was rewritten",
                index=old_size - 1,
            )
        return
    fr, sr, sn = _consistency_roots(old_size, new_size, old_root, proof)
    if sn != 0 or fr != old_root or sr != new_root:
        raise LedgerIntegrityError(
            f"consistency proof from {old_size} to {new_size} entries does not connect root "
            f"{_short(old_root)} to root {_short(new_root)}: an entry before {old_size} was "
            "changed, removed or reordered, or a root or the proof was altered",
        )


class InclusionProof(BaseModel):
    """That one entry is leaf ``leaf_index`` of the tree of ``tree_size`` with ``root_hash``.

    Self-contained and checkable by anyone with SHA-256; serialises to JSON
    with every hash as lowercase hex. ``hashes`` are bottom-up, as RFC 6962
    orders an audit path.
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]
    root_hash: bytes

    def verify(self, *, root_hash: bytes | None = None, leaf_data: bytes | None = None) -> None:
        """Check the proof; raise ``LedgerIntegrityError`` if it does not hold.

        Pass the root from a trusted (signed) checkpoint as ``root_hash``:
        the proof's own root only shows that the proof is well formed. Pass
        the entry's canonical bytes as ``leaf_data`` to check the entry too.
        """
        if leaf_data is not None and leaf_hash(leaf_data) != self.leaf_hash:
            raise LedgerIntegrityError(
                f"entry {self.leaf_index} does not hash to the leaf hash in its proof "
                f"({_short(self.leaf_hash)}): the entry was altered",
                index=self.leaf_index,
            )
        if root_hash is not None and root_hash != self.root_hash:
            raise LedgerIntegrityError(
                f"inclusion proof for entry {self.leaf_index} is for root "
                f"{_short(self.root_hash)}, not the trusted root {_short(root_hash)}",
                index=self.leaf_index,
            )
        verify_inclusion(
            self.leaf_index, self.tree_size, self.leaf_hash, self.hashes, self.root_hash
        )


class ConsistencyProof(BaseModel):
    """That the tree of ``new_size`` with ``new_root`` extends the tree of ``old_size``."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="hex", val_json_bytes="hex")

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: tuple[bytes, ...]

    def verify(self) -> None:
        """Check the proof; raise ``LedgerIntegrityError`` if it does not hold."""
        verify_consistency(self.old_size, self.new_size, self.old_root, self.new_root,
                           self.hashes)


# ---------------------------------------------------------------------------
# The tree


def _frontier_nodes(size: int) -> list[tuple[int, int]]:
    """``(level, index)`` of the complete subtrees that make up a tree of ``size``, left first.

    They are the set bits of ``size``, highest first: RFC 6962's split rule
    always takes the largest power of two on the left.
    """
    nodes = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine complete subtrees, left to right and largest first, into one root."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def compute_root(leaf_hashes: Iterable[bytes]) -> tuple[int, bytes]:
    """``(size, root)`` of the tree over ``leaf_hashes``, streamed in ``O(log n)`` memory.

    For verifying a ledger from its entries alone, trusting no stored node.
    """
    frontier: list[tuple[int, bytes]] = []
    size = 0
    for digest in leaf_hashes:
        level = 0
        while frontier and frontier[-1][0] == level:
            digest = node_hash(frontier.pop()[1], digest)
            level += 1
        frontier.append((level, digest))
        size += 1
    return size, _fold([digest for _, digest in frontier])


class MerkleTree:
    """An append-only RFC 6962 tree whose complete subtrees live in a ``NodeStore``.

    Holds in memory only the *frontier*, the complete subtrees of the
    current size (at most ``log2 n + 1`` hashes), so ``root`` costs no
    lookups and ``append`` no reads. Proofs and past roots cost ``O(log n)``
    store lookups. Not thread-safe: the owning ledger appends under its lock.

    ``size`` is owned by the caller (the ledger's entry count): opening an
    existing store means ``MerkleTree(store, size=len(ledger))``. A store
    missing a node that size needs raises ``LedgerIntegrityError``.
    """

    def __init__(self, store: NodeStore | None = None, size: int = 0) -> None:
        self.store: NodeStore = DictNodeStore() if store is None else store
        self._size = 0
        self._frontier: list[tuple[int, bytes]] = []
        self.reset(size)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return self._size

    def __len__(self) -> int:
        return self._size

    def reset(self, size: int) -> None:
        """Reload the frontier for ``size`` leaves from the store.

        For after a rolled-back transaction, or when another process has
        appended to a shared store. ``O(log n)`` lookups.
        """
        if size < 0:
            raise ValueError(f"a tree cannot have {size} leaves")
        self._frontier = [(level, self._node(level, index))
                          for level, index in _frontier_nodes(size)]
        self._size = size

    def _node(self, level: int, index: int) -> bytes:
        digest = self.store.get(level, index)
        if digest is None or len(digest) != HASH_SIZE:
            first = index << level
            what = "missing" if digest is None else "not a SHA-256 hash"
            raise LedgerIntegrityError(
                f"Merkle tree node {level}/{index} (entries {first} to "
                f"{first + (1 << level) - 1}) is {what} in the node store; rebuild the tree "
                "from the entries",
                index=first,
            )
        return digest

    def append(self, data: bytes) -> int:
        """Append a leaf with bytes ``data``; return its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, leaf: bytes) -> int:
        """Append a leaf given its leaf hash; return its index.

        Writes the leaf and every node it completes with one ``store.put``.
        """
        _check_hash(leaf, "leaf hash")
        index = self._size
        new = self._push(leaf, index)
        self.store.put(new)
        self._size = index + 1
        return index

    def extend_hashes(self, leaves: Iterable[bytes], *, batch: int = 10_000) -> None:
        """Append many leaf hashes, writing nodes in batches (for building or migrating)."""
        pending: list[tuple[int, int, bytes]] = []
        for leaf in leaves:
            _check_hash(leaf, "leaf hash")
            pending.extend(self._push(leaf, self._size))
            self._size += 1
            if len(pending) >= batch:
                self.store.put(pending)
                pending = []
        if pending:
            self.store.put(pending)

    def _push(self, leaf: bytes, index: int) -> list[tuple[int, int, bytes]]:
        """Add a leaf to the frontier and return the nodes it completes, leaf first."""
        digest, level = bytes(leaf), 0
        new = [(0, index, digest)]
        # Two complete subtrees of equal height merge, like carrying in binary addition.
        while self._frontier and self._frontier[-1][0] == level:
            digest = node_hash(self._frontier.pop()[1], digest)
            level, index = level + 1, index >> 1
            new.append((level, index, digest))
        self._frontier.append((level, digest))
        return new

    @property
    def root(self) -> bytes:
        """The root of the whole tree (``EMPTY_ROOT`` when empty); no store lookups."""
        return _fold([digest for _, digest in self._frontier])

    def root_at(self, size: int) -> bytes:
        """The root the tree had when it held ``size`` leaves (``0 <= size <= self.size``)."""
        self._check_size(size)
        if size == self._size:
            return self.root
        return _fold([self._node(level, index) for level, index in _frontier_nodes(size)])

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash of leaf ``index``."""
        if not 0 <= index < self._size:
            raise ValueError(f"no leaf {index} in a tree of {self._size} leaves")
        return self._node(0, index)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self._size:
            raise ValueError(f"size {size} is outside the tree's sizes 0 to {self._size}")

    def _range_hash(self, start: int, end: int) -> bytes:
        """RFC 6962's MTH of leaves ``[start, end)``.

        Only called on ranges of RFC 6962's recursion, whose start is a
        multiple of the largest power of two not above their length; those
        split into stored complete subtrees along the binary digits of the
        length.
        """
        parts = []
        while start < end:
            level = (end - start).bit_length() - 1
            parts.append(self._node(level, start >> level))
            start += 1 << level
        return _fold(parts)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 ``PATH(index, D[0:size])``: the audit path, bottom-up.

        ``size`` defaults to the current size. Costs ``O(log n)`` lookups:
        every sibling on the path is a stored complete subtree except at
        most one, which is itself ``O(log n)`` of them.
        """
        n = self._size if size is None else size
        self._check_size(n)
        if not 0 <= index < n:
            raise ValueError(f"no leaf {index} in a tree of {n} leaves")
        path = []
        start, end = 0, n
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                path.append(self._range_hash(start + k, end))
                end = start + k
            else:
                path.append(self._range_hash(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 ``PROOF(old_size, D[0:size])``; empty when ``old_size`` is 0 or ``size``.

        ``size`` defaults to the current size; ``0 <= old_size <= size``.
        """
        n = self._size if size is None else size
        self._check_size(n)
        if not 0 <= old_size <= n:
            raise ValueError(f"no consistency proof from size {old_size} to size {n}")
        if old_size in (0, n):
            return []
        proof = []
        start, end, m, complete = 0, n, old_size, True
        # SUBPROOF(m, D[start:end], complete), unrolled: m counts the old
        # tree's leaves inside [start, end); `complete` is RFC 6962's b.
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            proof.append(self._range_hash(start, end))
        proof.reverse()
        return proof

    def prove_inclusion(self, index: int, size: int | None = None) -> InclusionProof:
        """``inclusion_proof`` packaged with the leaf hash and root, ready to hand out."""
        n = self._size if size is None else size
        hashes = self.inclusion_proof(index, n)
        return InclusionProof(leaf_index=index, tree_size=n, leaf_hash=self.leaf(index),
                              hashes=tuple(hashes), root_hash=self.root_at(n))

    def prove_consistency(self, old_size: int, size: int | None = None) -> ConsistencyProof:
        """``consistency_proof`` packaged with both roots."""
        n = self._size if size is None else size
        hashes = self.consistency_proof(old_size, n)
        return ConsistencyProof(old_size=old_size, new_size=n, old_root=self.root_at(old_size),
                                new_root=self.root_at(n), hashes=tuple(hashes))

    def check_against(self, leaves: Iterable[bytes]) -> None:
        """Recompute every node from ``leaves`` and compare it with the store.

        ``leaves`` are the leaf hashes recomputed from the entries, in order;
        there must be exactly ``size`` of them. Raises
        ``LedgerIntegrityError`` naming the first entry under the first node
        that differs, so a proof can never be served from a node the entries
        do not support. ``O(n)`` hashes and lookups.
        """
        frontier: list[tuple[int, bytes]] = []
        count = 0
        for index, digest in enumerate(leaves):
            if index >= self._size:
                raise LedgerIntegrityError(
                    f"there are more entries than the tree's {self._size} leaves "
                    f"(entry {index} is not in the tree)",
                    index=index,
                )
            level, node_index = 0, index
            while True:
                stored = self.store.get(level, node_index)
                if stored != digest:
                    first = node_index << level
                    raise LedgerIntegrityError(
                        f"Merkle tree node {level}/{node_index} (entries {first} to "
                        f"{first + (1 << level) - 1}) does not match the entries "
                        f"({'missing' if stored is None else 'stored ' + _short(stored)}, "
                        f"computed {_short(digest)})",
                        index=first,
                    )
                if not frontier or frontier[-1][0] != level:
                    break
                digest = node_hash(frontier.pop()[1], digest)
                level, node_index = level + 1, node_index >> 1
            frontier.append((level, digest))
            count = index + 1
        if count != self._size:
            raise LedgerIntegrityError(
                f"the tree has {self._size} leaves but there are only {count} entries "
                "(entries removed)",
                index=count,
            )
        if _fold([digest for _, digest in frontier]) != self.root:
            raise LedgerIntegrityError("the tree's root does not match its stored nodes")
