"""The append-only, hash-chained record of every decision, and the state store beside it.

Each entry is canonical JSON ``{"index", "type", "body", "prev_hash"}``;
its hash is the SHA-256 of those bytes and the next entry carries it as
``prev_hash``. The served version is the candidate of the last accepted
decision; the first entry is the initial state, the first anchor.

The same canonical bytes are also the leaves of an RFC 6962 Merkle tree
(``_merkle``), appended in the entry's own write transaction, so any entry
can be proved included (``prove``) against a root (``root``). With a
signing key, every append also stores a signed checkpoint (``_checkpoint``)
of the new tree head; opening the ledger checks the last one, so history
rewritten before it is refused. Checking the entries and the tree needs no
key. The format, and how to check it independently: ``docs/ledger.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from .._canonical import canonical_json, sha256_hex, state_version
from .._decision import Decision
from .._errors import ConfigError, GuardrailsError, LedgerIntegrityError
from ..blobs import BlobIntegrityError, BlobStore, iter_blob_refs
from ._checkpoint import Checkpoint, SigningKey, VerifierKey
from ._merkle import (
    ConsistencyProof,
    DictNodeStore,
    InclusionProof,
    MerkleTree,
    SQLiteNodeStore,
    leaf_hash,
)

GENESIS_PREV = "0" * 64
SCHEMA_VERSION = 2
"""2 added the Merkle tree's node table (built once when a version 1 ledger is opened)."""

ORIGIN_PREFIX = "guardrails/"
"""A ledger's checkpoint origin is this prefix and a random UUID, fixed when it is created."""

EntryType = Literal["decision", "event"]


class LedgerBusyError(GuardrailsError):
    """Another writer held the ledger's write lock longer than the timeout; nothing was written.

    The message names the ledger, how long it waited and what to do.
    """


class LedgerEntry(BaseModel):
    """One ledger record, as stored and hashed."""

    model_config = ConfigDict(frozen=True)

    index: int
    type: EntryType
    body: dict[str, Any]
    prev_hash: str
    hash: str

    @property
    def decision(self) -> Decision | None:
        """The decision this entry records, or ``None`` for an event."""
        if self.type != "decision":
            return None
        return Decision.model_validate(self.body["decision"]).model_copy(
            update={"entry_index": self.index, "entry_hash": self.hash}
        )


class LedgerReport(BaseModel):
    """The outcome of ``Ledger.verify``: ``ok``, or the first problem and where."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    size: int
    served: str | None = None
    anchor: str | None = None
    problem: str | None = None
    index: int | None = None
    """The first bad entry, when the problem is in an entry."""

    def raise_for_problem(self, where: str = "ledger") -> LedgerReport:
        """Raise ``LedgerIntegrityError`` unless the ledger verified."""
        if not self.ok:
            raise LedgerIntegrityError(f"{where}: {self.problem}", index=self.index)
        return self


@runtime_checkable
class Ledger(Protocol):
    """Append-only decision log plus content-addressed states.

    ``promote`` is the only way the served version changes: it records an
    accepted decision only if the served version still equals
    ``expected_parent`` (compare-and-swap) and returns ``None`` otherwise.
    ``record(..., pending=...)`` opens a pending approval in the same
    transaction as its entry; ``resolves=ID`` closes one (exactly once: a
    second resolution raises ``ValueError``).

    Every entry's canonical bytes are a leaf of an RFC 6962 Merkle tree:
    ``root()`` is ``(size, root hash)``, ``prove(i)`` the inclusion proof of
    entry ``i`` in the current tree (``IndexError`` if there is no entry
    ``i``), ``latest_checkpoint()`` the last signed checkpoint note (``None``
    unless the ledger signs). ``verify`` recomputes the tree from the entries.
    """

    def __len__(self) -> int: ...

    def entries(self, start: int = 0) -> Iterator[LedgerEntry]: ...

    def served_version(self) -> str | None: ...

    def anchor_version(self) -> str | None: ...

    def put_state(self, state: dict[str, Any]) -> str: ...

    def get_state(self, version: str) -> dict[str, Any]: ...

    def has_state(self, version: str) -> bool: ...

    def record(self, decision: Decision, proposal: dict[str, Any] | None = None, *,
               pending: PendingApproval | None = None, resolves: str | None = None) -> Decision: ...

    def record_event(self, event: str, **details: Any) -> LedgerEntry: ...

    def record_event_at(self, size: int, event: str, **details: Any) -> LedgerEntry | None: ...

    def promote(self, decision: Decision, expected_parent: str | None,
                proposal: dict[str, Any] | None = None, *,
                resolves: str | None = None) -> Decision | None: ...

    def pending(self, *, include_resolved: bool = False) -> list[PendingApproval]: ...

    def verify(self, blob_store: BlobStore | None = None) -> LedgerReport: ...

    def prove(self, index: int) -> InclusionProof: ...

    def root(self) -> tuple[int, bytes]: ...

    def latest_checkpoint(self) -> str | None: ...


class PendingApproval(BaseModel):
    """A reviewed proposal waiting for a human; lives in the ledger's store."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The proposal id; ``approve ID`` and ``reject ID`` use it."""
    parent: str
    candidate: str
    kind: str
    source: str
    proposal: dict[str, Any]
    findings: list[dict[str, Any]]
    """The review's findings, as recorded."""
    requested_at: float
    """POSIX time the approval was requested."""
    expires_at: float | None = None
    """POSIX time after which it is rejected as timed out (``None``: never)."""
    status: Literal["pending", "approved", "rejected"] = "pending"
    entry_index: int | None = None
    """The ledger entry that records the request."""


def _decision_body(decision: Decision, proposal: dict[str, Any] | None) -> dict[str, Any]:
    body = decision.model_dump(mode="json", exclude={"entry_index", "entry_hash", "inclusion_proof"})
    return {"decision": body, "proposal": proposal}


def _seal(index: int, type_: EntryType, body: dict[str, Any], prev_hash: str) -> tuple[str, str]:
    data = canonical_json({"index": index, "type": type_, "body": body, "prev_hash": prev_hash})
    return sha256_hex(data), data.decode("utf-8")


def _entry(hash_: str, data: str) -> LedgerEntry:
    return LedgerEntry(**json.loads(data), hash=hash_)


def _moves_served(type_: str, body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a recorded body is an accepted decision, and whether it is an anchor."""
    decision = body.get("decision") if type_ == "decision" else None
    if not isinstance(decision, dict) or decision.get("verdict") != "accepted":
        return False, False
    return True, bool(decision.get("anchor"))


class _Bad(Exception):
    """The first problem ``verify_records`` found, and the entry it is in."""

    def __init__(self, problem: str, index: int | None = None) -> None:
        super().__init__(problem)
        self.problem, self.index = problem, index


class _Walk:
    """What the chain walk learnt: size, last hash, served and anchor versions, named ones."""

    def __init__(self) -> None:
        self.prev = GENESIS_PREV
        self.size = 0
        self.served: str | None = None
        self.anchor: str | None = None
        self.named: dict[str, int] = {}
        self.accepted: set[str] = set()


def verify_records(
    rows: Iterable[tuple[int, str, str]],
    states: Iterable[tuple[str, str]],
    head: dict[str, Any],
    blob_store: BlobStore | None = None,
    tree: MerkleTree | None = None,
) -> LedgerReport:
    """Check a ledger's raw records; shared by every ledger backend.

    ``rows`` are (index, stored hash, stored canonical data) in index order,
    ``states`` (version, stored canonical data), ``head`` the stored summary
    (``size``, ``head_hash``, ``served``). ``tree``, if given, is the stored
    Merkle tree at the head's size: every node is recomputed from the
    entries and compared. Names the first bad entry.
    """
    rows = rows if isinstance(rows, Sequence) else list(rows)
    walk = _Walk()
    try:
        for expected_index, row in enumerate(rows):
            _check_entry(walk, expected_index, *row)
        if walk.size == 0:
            if head.get("size"):
                raise _Bad(f"the ledger is empty but its head records {head.get('size')} entries")
            return LedgerReport(ok=True, size=0)
        _check_head(walk, head)
        if tree is not None:
            try:
                tree.check_against(leaf_hash(data.encode("utf-8")) for _, _, data in rows)
            except LedgerIntegrityError as exc:
                raise _Bad(f"the Merkle tree does not match the entries: {exc}", exc.index) from None
        present = _check_states(walk, states)
        if blob_store is not None:
            _check_blobs(walk, present, blob_store)
    except _Bad as bad:
        return LedgerReport(ok=False, size=walk.size, problem=bad.problem, index=bad.index)
    return LedgerReport(ok=True, size=walk.size, served=walk.served, anchor=walk.anchor)


def _check_entry(walk: _Walk, expected_index: int, index: int, stored_hash: str, data: str) -> None:
    if index != expected_index:
        raise _Bad(f"entry {expected_index} is missing (found entry {index} in its place)",
                   expected_index)
    if not isinstance(data, str) or not isinstance(stored_hash, str):
        raise _Bad(f"entry {index} is not stored as text (edited outside the ledger)", index)
    try:
        record = json.loads(data)
    except json.JSONDecodeError:
        raise _Bad(f"entry {index} is not valid JSON", index) from None
    if not isinstance(record, dict) or set(record) != {"index", "type", "body", "prev_hash"}:
        raise _Bad(f"entry {index} does not have the fields of a ledger entry", index)
    if sha256_hex(data.encode("utf-8")) != stored_hash:
        raise _Bad(f"entry {index} was altered: its content does not match its hash", index)
    if record["index"] != index:
        raise _Bad(f"entry {index} claims to be entry {record['index']} (reordered)", index)
    if record["prev_hash"] != walk.prev:
        raise _Bad(f"entry {index} does not chain to entry {index - 1} (removed, inserted "
                   "or reordered entries)", index)
    if record["type"] == "decision":
        _follow_decision(walk, index, record["type"], record["body"])
    walk.prev = stored_hash
    walk.size = index + 1


def _follow_decision(walk: _Walk, index: int, type_: str, body: dict[str, Any]) -> None:
    is_accepted, is_anchor = _moves_served(type_, body)
    decision = body.get("decision", {})
    for key in ("parent", "candidate"):
        if decision.get(key):
            walk.named.setdefault(decision[key], index)
    if not is_accepted:
        return
    if decision.get("kind") != "genesis" and decision.get("parent") != walk.served:
        raise _Bad(f"entry {index} accepts a change to {decision.get('parent')!r} "
                   f"while {walk.served!r} was served", index)
    walk.served = decision.get("candidate")
    walk.accepted.add(walk.served or "")
    if is_anchor:
        walk.anchor = walk.served


def _check_head(walk: _Walk, head: dict[str, Any]) -> None:
    last = walk.size - 1
    if head.get("size") != walk.size or head.get("head_hash") != walk.prev:
        raise _Bad(f"the ledger head records {head.get('size')} entries ending in "
                   f"{str(head.get('head_hash'))[:12]}, but the entries are {walk.size} ending "
                   f"in {walk.prev[:12]} (entries removed or appended outside the ledger)", last)
    if head.get("served") != walk.served:
        raise _Bad(f"the head serves {head.get('served')!r} but the last accepted entry names "
                   f"{walk.served!r}", last)


def _check_states(walk: _Walk, states: Iterable[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    present: dict[str, dict[str, Any]] = {}
    for version, data in states:
        if not isinstance(data, str) or sha256_hex(data.encode("utf-8")) != version:
            raise _Bad(f"stored state {version[:12]} was altered: its content does not match "
                       "its version")
        present[version] = json.loads(data)
    for version, index in walk.named.items():
        if version not in present:
            raise _Bad(f"state {version[:12]} named by entry {index} is missing", index)
    return present


def _check_blobs(walk: _Walk, present: dict[str, dict[str, Any]], store: BlobStore) -> None:
    for version in walk.accepted:
        for digest in iter_blob_refs(present[version]):
            try:
                content = store.get(digest)
            except KeyError:
                raise _Bad(f"blob {digest} of state {version[:12]} is missing") from None
            except BlobIntegrityError as exc:
                raise _Bad(f"blob {digest} of state {version[:12]} was altered in "
                           f"{exc.store}") from None
            except Exception as exc:  # a store that cannot be read proves nothing
                raise _Bad(f"blob {digest} of state {version[:12]} could not be read "
                           f"({type(exc).__name__}: {exc})") from None
            if "sha256:" + sha256_hex(content) != digest:
                raise _Bad(f"blob {digest} of state {version[:12]} was altered")


class _Tx(Protocol):
    """Storage primitives inside one write transaction of a ledger backend."""

    def head(self) -> dict[str, Any]: ...

    def set_head(self, values: dict[str, str]) -> None: ...

    def insert_entry(self, index: int, hash_: str, data: str) -> None: ...

    def get_pending(self, id_: str) -> PendingApproval | None: ...

    def put_pending(self, pending: PendingApproval) -> None: ...


class StoreLedger:
    """The ledger logic, written once over a backend's storage primitives.

    A backend sets ``_lock``, ``_tree`` (its ``MerkleTree``) and calls
    ``_open_checkpoints`` once inside its first transaction.
    """

    _lock: threading.RLock
    _tree: MerkleTree
    _tree_stale = False
    """Set when a transaction rolled back: the tree may hold a leaf that was never stored."""
    _origin = ""
    _signing_key: SigningKey | None = None
    _verifier_key: VerifierKey | None = None
    _where = "ledger"

    def _transaction(self) -> contextlib.AbstractContextManager[_Tx]:
        raise NotImplementedError

    def _meta(self, key: str) -> str | None:
        raise NotImplementedError

    def served_version(self) -> str | None:
        """The candidate of the last accepted decision (``None`` before the first entry)."""
        return self._meta("served")

    def anchor_version(self) -> str | None:
        """The last state a human approved (the initial state until one is approved)."""
        return self._meta("anchor")

    def _stored_size(self) -> int:
        return int(self._meta("size") or 0)

    def _synced_tree(self) -> MerkleTree:
        """The tree at the stored size (another process may have appended); under ``_lock``."""
        size = self._stored_size()
        if self._tree_stale or self._tree.size != size:
            self._tree.reset(size)
            self._tree_stale = False
        return self._tree

    def _open_checkpoints(self, tx: _Tx, signing_key: SigningKey | None,
                          verifier_key: VerifierKey | None, trusted_checkpoint: str | None) -> None:
        """Fix the origin and signing key, and check the tree against the last checkpoints.

        The stored checkpoint is checked with ``verifier_key`` if given,
        else with the public key recorded when the ledger first signed;
        ``trusted_checkpoint`` (a signed note kept elsewhere) is checked too.
        """
        head = tx.head()
        updates: dict[str, str] = {}
        origin = head.get("origin")
        if origin is None:
            origin = ORIGIN_PREFIX + str(uuid.uuid4())
            updates["origin"] = origin
        recorded: VerifierKey | None = None
        if head.get("checkpoint_key"):
            try:
                recorded = VerifierKey.parse(head["checkpoint_key"])
            except ConfigError as exc:
                raise LedgerIntegrityError(
                    f"{self._where}: the recorded checkpoint key is damaged ({exc})") from None
        if signing_key is not None:
            if recorded is None:
                recorded = signing_key.verifier
                updates["checkpoint_key"] = str(recorded)
            elif recorded != signing_key.verifier:
                raise ConfigError(
                    f"{self._where}: its checkpoints are signed by {recorded.name}+"
                    f"{recorded.key_id:08x}, not by the signing key given ({signing_key.name}+"
                    f"{signing_key.key_id:08x}); open it with the ledger's own key")
        self._origin, self._signing_key = str(origin), signing_key
        self._verifier_key = verifier_key or recorded
        stored = head.get("checkpoint")
        if self._verifier_key is None:
            if trusted_checkpoint is not None:
                raise ConfigError(f"{self._where}: a trusted checkpoint needs a verifier key "
                                  "to check its signature")
        else:
            if (verifier_key is not None and stored is None and trusted_checkpoint is None
                    and self._tree.size):
                raise LedgerIntegrityError(
                    f"{self._where}: has {self._tree.size} entries but no signed checkpoint to "
                    "check with the given key (the checkpoint was removed, or the ledger never "
                    "signed)")
            for note, what in ((stored, "stored checkpoint"),
                               (trusted_checkpoint, "trusted checkpoint")):
                if note is not None:
                    self._check_checkpoint(note, self._tree, what)
        if updates:
            tx.set_head(updates)

    def _check_checkpoint(self, note: str, tree: MerkleTree, what: str) -> Checkpoint:
        assert self._verifier_key is not None
        checkpoint = Checkpoint.verify(note, self._verifier_key, origin=self._origin,
                                       where=f"{self._where} ({what})")
        checkpoint.check_tree(tree, where=self._where)
        return checkpoint

    def _checkpoint_problem(self, tree: MerkleTree) -> str | None:
        """Why the stored checkpoint does not hold for ``tree``, if a key is known; else ``None``."""
        note = self._meta("checkpoint")
        if note is None or self._verifier_key is None:
            return None
        try:
            self._check_checkpoint(note, tree, "stored checkpoint")
        except LedgerIntegrityError as exc:
            return str(exc)
        return None

    @property
    def origin(self) -> str:
        """The ledger's checkpoint origin, ``guardrails/<uuid>``, fixed when it was created."""
        return self._origin

    @property
    def verifier_key(self) -> VerifierKey | None:
        """The key checkpoints are checked with: the one given, else the one recorded."""
        return self._verifier_key

    def latest_checkpoint(self) -> str | None:
        """The last signed checkpoint note (``None`` unless the ledger signs)."""
        with self._lock:
            return self._meta("checkpoint")

    def _read_view(self) -> contextlib.AbstractContextManager[Any]:
        """Where a read of several rows runs: one snapshot where the store has them."""
        return contextlib.nullcontext()

    def root(self) -> tuple[int, bytes]:
        """``(size, root hash)`` of the Merkle tree over the entries."""
        with self._lock, self._read_view():
            tree = self._synced_tree()
            return tree.size, tree.root

    def prove(self, index: int) -> InclusionProof:
        """The inclusion proof of entry ``index`` in the current tree; ``IndexError`` if none."""
        with self._lock, self._read_view():
            tree = self._synced_tree()
            if not 0 <= index < tree.size:
                raise IndexError(f"{self._where}: no entry {index} (the ledger has {tree.size} "
                                 f"entries, 0 to {tree.size - 1})")
            return tree.prove_inclusion(index)

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """That the tree of ``new_size`` entries (default: all) extends the tree of
        ``old_size``: the RFC 6962 consistency proof with both roots. ``IndexError`` unless
        ``1 <= old_size <= new_size <= len(self)``."""
        with self._lock, self._read_view():
            tree = self._synced_tree()
            size = tree.size if new_size is None else new_size
            if not 1 <= old_size <= size <= tree.size:
                raise IndexError(f"{self._where}: no consistency proof from {old_size} to "
                                 f"{size} entries (the ledger has {tree.size}; give "
                                 f"1 <= old size <= new size <= {tree.size})")
            return tree.prove_consistency(old_size, size)

    def _append(self, tx: _Tx, type_: EntryType, body: dict[str, Any]) -> LedgerEntry:
        head = tx.head()
        index = int(head.get("size") or 0)
        prev = head.get("head_hash") or GENESIS_PREV
        hash_, data = _seal(index, type_, body, prev)
        tx.insert_entry(index, hash_, data)
        if self._tree_stale or self._tree.size != index:
            self._tree.reset(index)
            self._tree_stale = False
        self._tree.append(data.encode("utf-8"))
        updates = {"size": str(index + 1), "head_hash": hash_}
        if self._signing_key is not None:
            updates["checkpoint"] = Checkpoint(
                origin=self._origin, size=index + 1, root_hash=self._tree.root
            ).sign(self._signing_key)
        is_accepted, is_anchor = _moves_served(type_, body)
        if is_accepted:
            updates["served"] = body["decision"]["candidate"]
            if is_anchor:
                updates["anchor"] = updates["served"]
        tx.set_head(updates)
        return LedgerEntry(index=index, type=type_, body=body, prev_hash=prev, hash=hash_)

    @staticmethod
    def _resolve(tx: _Tx, id_: str, decision: Decision) -> None:
        pending = tx.get_pending(id_)
        if pending is None:
            raise KeyError(f"no pending approval {id_!r}")
        if pending.status != "pending":
            raise ValueError(f"approval {id_!r} was already {pending.status}; it can be "
                             "resolved only once")
        status: Literal["approved", "rejected"] = "approved" if decision.accepted else "rejected"
        tx.put_pending(pending.model_copy(update={"status": status}))

    def record(self, decision: Decision, proposal: dict[str, Any] | None = None, *,
               pending: PendingApproval | None = None, resolves: str | None = None) -> Decision:
        if decision.accepted:
            raise ValueError("accepted decisions change the served version: use promote()")
        with self._transaction() as tx:
            if resolves is not None:
                self._resolve(tx, resolves, decision)
            entry = self._append(tx, "decision", _decision_body(decision, proposal))
            if pending is not None:
                tx.put_pending(pending.model_copy(update={"entry_index": entry.index}))
        return decision.model_copy(update={"entry_index": entry.index, "entry_hash": entry.hash})

    def record_event(self, event: str, **details: Any) -> LedgerEntry:
        with self._transaction() as tx:
            return self._append(tx, "event", {"event": event, **details})

    def record_event_at(self, size: int, event: str, **details: Any) -> LedgerEntry | None:
        """``record_event`` only if the ledger still holds ``size`` entries, in one
        transaction (a compare-and-swap on its end); ``None``, writing nothing, when another
        writer appended first. For writers that must not record the same fact twice."""
        with self._transaction() as tx:
            if int(tx.head().get("size") or 0) != size:
                return None
            return self._append(tx, "event", {"event": event, **details})

    def promote(self, decision: Decision, expected_parent: str | None,
                proposal: dict[str, Any] | None = None, *,
                resolves: str | None = None) -> Decision | None:
        with self._transaction() as tx:
            if tx.head().get("served") != expected_parent:
                return None
            if resolves is not None:
                self._resolve(tx, resolves, decision)
            entry = self._append(tx, "decision", _decision_body(decision, proposal))
        return decision.model_copy(update={"entry_index": entry.index, "entry_hash": entry.hash})


class MemoryLedger(StoreLedger):
    """The ledger in process memory: same protocol and checks, nothing persisted.

    Its Merkle tree lives in a ``DictNodeStore``; with ``signing_key`` every
    append stores a signed checkpoint, as ``SQLiteLedger`` does.
    """

    def __init__(self, *, signing_key: SigningKey | None = None) -> None:
        self._rows: list[tuple[int, str, str]] = []
        self._states: dict[str, str] = {}
        self._head: dict[str, Any] = {}
        self._pending: dict[str, PendingApproval] = {}
        self._lock = threading.RLock()
        self._tree = MerkleTree(DictNodeStore())
        with self._transaction() as tx:
            self._open_checkpoints(tx, signing_key, None, None)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        # Every check inside a transaction happens before its first write, so
        # holding the lock is enough: a failed check leaves nothing half-written.
        with self._lock:
            yield self

    def head(self) -> dict[str, Any]:
        return self._head

    def _meta(self, key: str) -> str | None:
        value = self._head.get(key)
        return None if value is None else str(value)

    def set_head(self, values: dict[str, str]) -> None:
        self._head.update(values)

    def insert_entry(self, index: int, hash_: str, data: str) -> None:
        self._rows.append((index, hash_, data))

    def get_pending(self, id_: str) -> PendingApproval | None:
        return self._pending.get(id_)

    def put_pending(self, pending: PendingApproval) -> None:
        self._pending[pending.id] = pending

    def __len__(self) -> int:
        return len(self._rows)

    def entries(self, start: int = 0) -> Iterator[LedgerEntry]:
        for _, hash_, data in self._rows[start:]:
            yield _entry(hash_, data)

    def put_state(self, state: dict[str, Any]) -> str:
        data = canonical_json(state).decode("utf-8")
        version = sha256_hex(data.encode("utf-8"))
        with self._lock:
            self._states.setdefault(version, data)
        return version

    def get_state(self, version: str) -> dict[str, Any]:
        try:
            return dict(json.loads(self._states[version]))
        except KeyError:
            raise KeyError(f"no stored state {version[:12]}") from None

    def has_state(self, version: str) -> bool:
        return version in self._states

    def pending(self, *, include_resolved: bool = False) -> list[PendingApproval]:
        with self._lock:
            return [p for p in self._pending.values() if include_resolved or p.status == "pending"]

    def verify(self, blob_store: BlobStore | None = None) -> LedgerReport:
        with self._lock:
            rows = list(self._rows)
            states = list(self._states.items())
            head = {"size": len(rows), "head_hash": rows[-1][1] if rows else None,
                    "served": self._head.get("served")}
            try:
                tree = MerkleTree(self._tree.store, self._stored_size())
            except LedgerIntegrityError as exc:
                return LedgerReport(ok=False, size=len(rows), problem=str(exc), index=exc.index)
        report = verify_records(rows, states, head, blob_store, tree)
        problem = self._checkpoint_problem(tree) if report.ok else None
        return report if problem is None else LedgerReport(ok=False, size=report.size,
                                                           problem=problem)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS guardrails_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS guardrails_entries (
    idx INTEGER PRIMARY KEY, hash TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guardrails_states (version TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS guardrails_pending (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, data TEXT NOT NULL)
"""


_LEDGER_TABLES = frozenset({"guardrails_meta", "guardrails_entries", "guardrails_states",
                            "guardrails_pending"})
_SQLITE_HEADER = b"SQLite format 3\x00"
_NODE_TABLE = "guardrails_merkle_nodes"
_DAMAGED = ("if this was your ledger, it was truncated, replaced or damaged: restore it from a "
            "backup and check it against the last checkpoint you exported (guardrails ledger "
            "verify --key); do not serve from it")


def _foreign(path: Path, tables: set[str]) -> LedgerIntegrityError:
    held = f"it holds the tables {', '.join(sorted(tables))}" if tables else "it holds no tables"
    return LedgerIntegrityError(
        f"{path}: not a guardrails ledger ({held}); point the ledger at a new file or at an "
        f"existing ledger; {_DAMAGED}")


def _check_ledger_file(path: Path) -> None:
    """Raise ``LedgerIntegrityError`` unless ``path`` is an existing, non-empty SQLite file."""
    if not path.exists():
        raise LedgerIntegrityError(
            f"{path}: not a guardrails ledger: there is no such file (commands that read never "
            "create one; check the path, which in guardrails.toml is relative to that file). "
            "If a ledger was here, it was moved or deleted: restore it from a backup")
    if not path.is_file():
        raise LedgerIntegrityError(f"{path}: not a guardrails ledger: it is a directory, not a "
                                   "file; give the ledger file inside it")
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise LedgerIntegrityError(f"{path}: cannot read the ledger ({exc.strerror})") from None
    if not header:
        raise LedgerIntegrityError(f"{path}: not a guardrails ledger: the file is empty (0 "
                                   f"bytes); a real ledger is never empty, so {_DAMAGED}")
    if header != _SQLITE_HEADER:
        raise LedgerIntegrityError(f"{path}: not a guardrails ledger: not an SQLite database; "
                                   f"{_DAMAGED}")


class _ReadOnlyTx:
    """A ``_Tx`` for opening read-only: reads pass through, writes are refused.

    ``set_head`` drops its values instead: on open it would only fix an origin
    for a ledger that never had one, which a reader must not do.
    """

    def __init__(self, inner: _Tx) -> None:
        self._inner = inner

    def head(self) -> dict[str, Any]:
        return self._inner.head()

    def set_head(self, values: dict[str, str]) -> None:
        return None

    def insert_entry(self, index: int, hash_: str, data: str) -> None:
        raise PermissionError("the ledger is opened read-only")

    def get_pending(self, id_: str) -> PendingApproval | None:
        return self._inner.get_pending(id_)

    def put_pending(self, pending: PendingApproval) -> None:
        raise PermissionError("the ledger is opened read-only")


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def head(self) -> dict[str, Any]:
        return dict(self.conn.execute("SELECT key, value FROM guardrails_meta"))

    def set_head(self, values: dict[str, str]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO guardrails_meta VALUES (?, ?)", values.items())

    def insert_entry(self, index: int, hash_: str, data: str) -> None:
        self.conn.execute("INSERT INTO guardrails_entries VALUES (?, ?, ?)", (index, hash_, data))

    def get_pending(self, id_: str) -> PendingApproval | None:
        row = self.conn.execute("SELECT data FROM guardrails_pending WHERE id=?", (id_,)).fetchone()
        return None if row is None else PendingApproval.model_validate_json(row[0])

    def put_pending(self, pending: PendingApproval) -> None:
        self.conn.execute("INSERT OR REPLACE INTO guardrails_pending VALUES (?, ?, ?)",
                          (pending.id, pending.status, pending.model_dump_json()))


class SQLiteLedger(StoreLedger):
    """The embedded default: one SQLite file, safe across threads and processes.

    Writes take SQLite's write lock (``BEGIN IMMEDIATE``), so the
    compare-and-swap in ``promote`` holds between processes too. Opening a
    file that is not a ledger raises ``LedgerIntegrityError`` naming it.

    The Merkle tree's nodes live in the same file (``guardrails_merkle_nodes``),
    written in each entry's transaction; a ledger from before the tree gets
    it built once, on open. With ``signing_key``, every append stores a
    signed checkpoint and the key's public half is recorded in the file.
    On open, the stored checkpoint, and ``trusted_checkpoint`` (a signed
    note kept elsewhere) if given, are checked with ``verifier_key``, or
    else with the recorded public key: a bad signature, another ledger's
    checkpoint, or a tree that does not extend it (history rewritten or
    truncated) raises ``LedgerIntegrityError`` naming the file. Given
    ``verifier_key``, a ledger with entries but no checkpoint is refused too.
    The recorded key only guards against damage; against a rewritten file,
    keep the verifier key (or a checkpoint) outside it.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0,
                 signing_key: SigningKey | None = None,
                 verifier_key: VerifierKey | None = None,
                 trusted_checkpoint: str | None = None,
                 read_only: bool = False) -> None:
        self.path = Path(path)
        self._where = str(self.path)
        self._lock = threading.RLock()
        self._read_only = read_only
        self._timeout = timeout
        if read_only:
            if signing_key is not None:
                raise ValueError("a ledger opened read-only cannot sign; drop signing_key")
            self._open_read_only(timeout, verifier_key, trusted_checkpoint)
        else:
            self._open_writable(timeout, signing_key, verifier_key, trusted_checkpoint)

    def _open_writable(self, timeout: float, signing_key: SigningKey | None,
                       verifier_key: VerifierKey | None, trusted_checkpoint: str | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            tables = {row[0] for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "guardrails_meta" not in tables:
                # Another application's database: leave it exactly as it is.
                self._conn.close()
                raise _foreign(self.path, tables)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._transaction() as tx:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    tx.conn.execute(statement)
                store = SQLiteNodeStore(tx.conn)
                store.create_table()
                found = tx.head().get("schema_version")
                if found is not None and int(found) > SCHEMA_VERSION:
                    raise LedgerIntegrityError(
                        f"{self.path}: ledger schema {found} is newer than this library "
                        f"understands ({SCHEMA_VERSION}); upgrade guardrails-middleware")
                if found != str(SCHEMA_VERSION):
                    tx.set_head({"schema_version": str(SCHEMA_VERSION)})
                if store.table not in tables:
                    # A ledger from before the tree: build it from the entries, once.
                    MerkleTree(store).extend_hashes(
                        leaf_hash(data.encode("utf-8") if isinstance(data, str) else bytes(data))
                        for (data,) in tx.conn.execute(
                            "SELECT data FROM guardrails_entries ORDER BY idx"))
                try:
                    self._tree = MerkleTree(store, int(tx.head().get("size") or 0))
                except LedgerIntegrityError as exc:
                    raise LedgerIntegrityError(f"{self.path}: {exc}", index=exc.index) from None
                self._open_checkpoints(tx, signing_key, verifier_key, trusted_checkpoint)
        except sqlite3.DatabaseError as exc:
            raise LedgerIntegrityError(
                f"{self.path}: not a guardrails ledger ({exc}); point the ledger at a new "
                "file or at an existing ledger") from None

    def _open_read_only(self, timeout: float, verifier_key: VerifierKey | None,
                        trusted_checkpoint: str | None) -> None:
        """Open without creating, migrating or writing anything, not even SQLite's side files.

        With no ``-wal`` file beside it, no connection has the database open in WAL mode, so
        it is read as immutable (``mode=ro`` alone would create ``-wal`` and ``-shm``); if a
        writer appears meanwhile, a torn read fails verification rather than passing it.
        """
        _check_ledger_file(self.path)
        wal = self.path.with_name(self.path.name + "-wal").exists()
        uri = self.path.resolve().as_uri() + ("?mode=ro" if wal else "?mode=ro&immutable=1")
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                                         check_same_thread=False)
            tables = {row[0] for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables >= _LEDGER_TABLES:
                self._conn.close()
                raise _foreign(self.path, tables)
            with self._read() as tx:
                found = tx.head().get("schema_version")
                if found is not None and int(found) > SCHEMA_VERSION:
                    raise LedgerIntegrityError(
                        f"{self.path}: ledger schema {found} is newer than this library "
                        f"understands ({SCHEMA_VERSION}); upgrade guardrails-middleware")
                self._tree = self._read_tree(tx, tables)
                self._open_checkpoints(_ReadOnlyTx(tx), None, verifier_key, trusted_checkpoint)
        except sqlite3.DatabaseError as exc:
            raise LedgerIntegrityError(
                f"{self.path}: not a guardrails ledger ({exc}); {_DAMAGED}") from None

    def _read_tree(self, tx: _SQLiteTx, tables: set[str]) -> MerkleTree:
        size = int(tx.head().get("size") or 0)
        if _NODE_TABLE not in tables:
            # A ledger from before the tree, read without upgrading it: build it in memory.
            tree = MerkleTree(DictNodeStore())
            tree.extend_hashes(
                leaf_hash(data.encode("utf-8") if isinstance(data, str) else bytes(data))
                for (data,) in tx.conn.execute("SELECT data FROM guardrails_entries ORDER BY idx"))
            return tree
        try:
            return MerkleTree(SQLiteNodeStore(tx.conn), size)
        except LedgerIntegrityError as exc:
            raise LedgerIntegrityError(f"{self.path}: {exc}", index=exc.index) from None

    @property
    def read_only(self) -> bool:
        """Whether this ledger was opened read-only (every write raises ``PermissionError``)."""
        return self._read_only

    @contextlib.contextmanager
    def _read(self) -> Iterator[_SQLiteTx]:
        """One read transaction (no write lock): every read inside sees one moment."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield _SQLiteTx(self._conn)
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_SQLiteTx]:
        if self._read_only:
            raise PermissionError(f"{self.path}: opened read-only; open it without read_only "
                                  "to write")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                raise LedgerBusyError(
                    f"{self.path}: another process held the ledger's write lock for more than "
                    f"{self._timeout:g} s (a review or an approval still running, or a stuck "
                    "process); retry when it is done, or wait longer with [ledger] timeout"
                ) from None
            try:
                yield _SQLiteTx(self._conn)
                self._conn.execute("COMMIT")
            except BaseException:
                self._tree_stale = True
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM guardrails_meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __len__(self) -> int:
        return int(self._meta("size") or 0)

    def entries(self, start: int = 0) -> Iterator[LedgerEntry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT hash, data FROM guardrails_entries WHERE idx >= ? ORDER BY idx", (start,)
            ).fetchall()
        for hash_, data in rows:
            yield _entry(hash_, data)

    def put_state(self, state: dict[str, Any]) -> str:
        data = canonical_json(state).decode("utf-8")
        version = state_version(state)
        with self._transaction() as tx:
            tx.conn.execute("INSERT OR IGNORE INTO guardrails_states VALUES (?, ?)", (version, data))
        return version

    def get_state(self, version: str) -> dict[str, Any]:
        with self._lock:
            row = self._conn.execute(
                "SELECT data FROM guardrails_states WHERE version=?", (version,)).fetchone()
        if row is None:
            raise KeyError(f"no stored state {version[:12]} in {self.path}")
        return dict(json.loads(row[0]))

    def has_state(self, version: str) -> bool:
        with self._lock:
            return self._conn.execute(
                "SELECT 1 FROM guardrails_states WHERE version=?", (version,)).fetchone() is not None

    def pending(self, *, include_resolved: bool = False) -> list[PendingApproval]:
        query = "SELECT data FROM guardrails_pending"
        if not include_resolved:
            query += " WHERE status='pending'"
        with self._lock:
            rows = self._conn.execute(query).fetchall()
        return [PendingApproval.model_validate_json(row[0]) for row in rows]

    def verify(self, blob_store: BlobStore | None = None) -> LedgerReport:
        # One read transaction for every read: another process appending meanwhile must not
        # make the entries, the head and the tree look inconsistent with each other.
        with self._lock:
            try:
                self._conn.execute("BEGIN")
            except sqlite3.DatabaseError as exc:
                return LedgerReport(ok=False, size=0, problem=f"{self.path}: cannot read ({exc})")
            try:
                return self._verify_snapshot(blob_store)
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

    def _verify_snapshot(self, blob_store: BlobStore | None) -> LedgerReport:
        try:
            rows = self._conn.execute(
                "SELECT idx, hash, data FROM guardrails_entries ORDER BY idx").fetchall()
            states = self._conn.execute("SELECT version, data FROM guardrails_states").fetchall()
            head = dict(self._conn.execute("SELECT key, value FROM guardrails_meta"))
        except sqlite3.DatabaseError as exc:
            return LedgerReport(ok=False, size=0, problem=f"{self.path}: cannot read ({exc})")
        head["size"] = int(head["size"]) if head.get("size") else 0
        try:
            tree = MerkleTree(self._tree.store, head["size"])
        except LedgerIntegrityError as exc:
            return LedgerReport(ok=False, size=head["size"], problem=f"{self.path}: {exc}",
                                index=exc.index)
        report = verify_records(rows, states, head, blob_store, tree)
        problem = self._checkpoint_problem(tree) if report.ok else None
        if not report.ok:
            return report.model_copy(update={"problem": f"{self.path}: {report.problem}"})
        if problem is not None:
            return LedgerReport(ok=False, size=report.size, problem=problem)
        return report
