"""The hash-chained ledger and its state store, for every backend."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import pg_server
import pytest

import guardrails as gr
from guardrails.ledger._ledger import GENESIS_PREV

STATE_0: dict[str, Any] = {"prompt": "v0"}
STATE_1: dict[str, Any] = {"prompt": "v1"}
STATE_2: dict[str, Any] = {"prompt": "v2"}
V0, V1, V2 = (gr.state_version(s) for s in (STATE_0, STATE_1, STATE_2))


def genesis(ledger: gr.Ledger) -> gr.Decision:
    ledger.put_state(STATE_0)
    recorded = ledger.promote(
        gr.Decision.accept(candidate=V0, kind="genesis", source="operator", anchor=True), None)
    assert recorded is not None
    return recorded


def accept(ledger: gr.Ledger, parent: str, state: dict[str, Any], **fields: Any
           ) -> gr.Decision | None:
    ledger.put_state(state)
    return ledger.promote(
        gr.Decision.accept(parent=parent, candidate=gr.state_version(state), **fields), parent,
        {"id": "p"})


def reject(ledger: gr.Ledger, parent: str, state: dict[str, Any]) -> gr.Decision:
    ledger.put_state(state)
    finding = gr.Finding(check="invariant", passed=False, message="no")
    return ledger.record(gr.Decision.reject([finding], parent=parent,
                                            candidate=gr.state_version(state)))


def history(ledger: gr.Ledger) -> None:
    """genesis (0), accepted V1 (1), rejected V2 (2), an event (3), accepted V2 (4)."""
    genesis(ledger)
    accept(ledger, V0, STATE_1)
    reject(ledger, V1, STATE_2)
    ledger.record_event("note", detail="x")
    accept(ledger, V1, STATE_2)


# -- behaviour shared by every backend -----------------------------------------------------


def test_new_ledger_is_empty_and_verifies(ledger: gr.Ledger) -> None:
    """A new ledger has no entries, serves nothing and verifies."""
    assert len(ledger) == 0
    assert ledger.served_version() is None and ledger.anchor_version() is None
    assert ledger.verify() == gr.LedgerReport(ok=True, size=0)


def test_genesis_promotion_sets_served_and_anchor(ledger: gr.Ledger) -> None:
    """Promoting the initial state onto an empty ledger serves it and makes it the anchor."""
    recorded = genesis(ledger)
    assert recorded.entry_index == 0 and recorded.entry_hash
    assert ledger.served_version() == V0 and ledger.anchor_version() == V0


def test_promote_moves_the_served_version(ledger: gr.Ledger) -> None:
    """An accepted promotion against the served version serves its candidate."""
    genesis(ledger)
    recorded = accept(ledger, V0, STATE_1)
    assert recorded is not None and recorded.entry_index == 1
    assert ledger.served_version() == V1
    assert ledger.anchor_version() == V0


def test_promote_with_stale_parent_does_nothing(ledger: gr.Ledger) -> None:
    """promote is compare-and-swap: a wrong expected parent returns None and appends nothing."""
    genesis(ledger)
    accept(ledger, V0, STATE_1)
    assert accept(ledger, V0, STATE_2) is None
    assert len(ledger) == 2 and ledger.served_version() == V1


def test_an_event_at_a_stale_size_is_refused_and_writes_nothing(
        store_factory: Any) -> None:
    """record_event_at appends only while the ledger holds the size the writer saw; a second
    connection that appended first makes it refuse, on every shared backend."""
    first, second = store_factory(), store_factory()
    size = len(first)
    assert second.record_event("other writer") is not None
    assert first.record_event_at(size, "mine", n=1) is None
    assert len(first) == size + 1
    entry = first.record_event_at(size + 1, "mine", n=1)
    assert entry is not None and entry.index == size + 1 and entry.body == {"event": "mine", "n": 1}
    assert first.verify().ok


def test_promote_on_empty_ledger_needs_no_parent(ledger: gr.Ledger) -> None:
    """On an empty ledger only a promotion expecting no served version succeeds."""
    ledger.put_state(STATE_1)
    decision = gr.Decision.accept(candidate=V1, kind="genesis")
    assert ledger.promote(decision, V0) is None
    assert len(ledger) == 0


def test_anchor_promotion_moves_the_anchor(ledger: gr.Ledger) -> None:
    """An accepted decision marked anchor becomes the new drift anchor."""
    genesis(ledger)
    accept(ledger, V0, STATE_1, anchor=True)
    assert ledger.anchor_version() == V1


def test_record_rejects_accepted_decisions(ledger: gr.Ledger) -> None:
    """record refuses an accepted decision: only promote may change the served version."""
    genesis(ledger)
    with pytest.raises(ValueError, match="use promote"):
        ledger.record(gr.Decision.accept(parent=V0, candidate=V1))
    assert len(ledger) == 1


def test_record_keeps_the_served_version(ledger: gr.Ledger) -> None:
    """A recorded rejection is appended with its index and hash and serves nothing new."""
    genesis(ledger)
    recorded = reject(ledger, V0, STATE_1)
    assert (recorded.entry_index, len(ledger)) == (1, 2)
    assert recorded.entry_hash == list(ledger.entries())[1].hash
    assert ledger.served_version() == V0


def test_entries_form_a_hash_chain(ledger: gr.Ledger) -> None:
    """Each entry carries the previous entry's hash; the first carries the genesis value."""
    history(ledger)
    entries = list(ledger.entries())
    assert [e.index for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0].prev_hash == GENESIS_PREV
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))


def test_entries_start_at_an_index(ledger: gr.Ledger) -> None:
    """entries(start) yields the entries from that index on."""
    history(ledger)
    assert [e.index for e in ledger.entries(3)] == [3, 4]


def test_entry_decision_round_trips(ledger: gr.Ledger) -> None:
    """An entry gives back its decision with its ledger position; events give None."""
    history(ledger)
    entries = list(ledger.entries())
    decision = entries[2].decision
    assert decision is not None and decision.verdict is gr.Verdict.REJECTED
    assert (decision.entry_index, decision.entry_hash) == (2, entries[2].hash)
    assert decision.findings[0].check == "invariant"
    assert entries[3].decision is None
    assert entries[3].body == {"event": "note", "detail": "x"}


def test_states_are_content_addressed(ledger: gr.Ledger) -> None:
    """put_state returns the state's version; get_state gives an equal copy back."""
    assert ledger.put_state(STATE_1) == V1
    assert ledger.put_state(STATE_1) == V1
    assert ledger.has_state(V1) and not ledger.has_state(V2)
    copy = ledger.get_state(V1)
    copy["prompt"] = "changed"
    assert ledger.get_state(V1) == STATE_1


def test_unknown_state_is_a_key_error(ledger: gr.Ledger) -> None:
    """get_state of an unknown version raises KeyError naming it."""
    with pytest.raises(KeyError, match=V2[:12]):
        ledger.get_state(V2)


def test_verify_reports_served_and_anchor(ledger: gr.Ledger) -> None:
    """verify on an untouched ledger is ok and reports its size, served version and anchor."""
    history(ledger)
    report = ledger.verify()
    assert (report.ok, report.size, report.served, report.anchor) == (True, 5, V2, V0)
    assert report.raise_for_problem() is report


def test_verify_finds_a_missing_state(ledger: gr.Ledger) -> None:
    """verify names the entry whose version has no stored state."""
    genesis(ledger)
    ledger.promote(gr.Decision.accept(parent=V0, candidate=V1), V0)  # state never stored
    report = ledger.verify()
    assert not report.ok and report.index == 1
    assert f"state {V1[:12]} named by entry 1 is missing" in str(report.problem)
    with pytest.raises(gr.LedgerIntegrityError, match="is missing") as info:
        report.raise_for_problem()
    assert info.value.index == 1


def test_verify_checks_blobs(ledger: gr.Ledger) -> None:
    """With a blob store, verify finds missing and altered blobs of accepted states."""
    blobs = gr.MemoryBlobStore()
    digest = blobs.put(b"weights")
    ledger.put_state({"w": gr.blob_ref(digest)})
    ledger.promote(gr.Decision.accept(candidate=gr.state_version({"w": gr.blob_ref(digest)}),
                                      kind="genesis"), None)
    assert ledger.verify(blobs).ok
    assert "is missing" in str(ledger.verify(gr.MemoryBlobStore()).problem)
    blobs._blobs[digest] = b"tampered"
    assert "was altered" in str(ledger.verify(blobs).problem)


def test_concurrent_promotions_have_one_winner(ledger: gr.Ledger) -> None:
    """Of many threads promoting against the same parent, exactly one succeeds."""
    genesis(ledger)
    states = [{"prompt": f"candidate {i}"} for i in range(8)]
    results: list[gr.Decision | None] = [None] * len(states)
    barrier = threading.Barrier(len(states))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = accept(ledger, V0, states[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(states))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert ledger.served_version() == winners[0].candidate
    assert len(ledger) == 2 and ledger.verify().ok


# -- tampering ----------------------------------------------------------------------------


def tamper_entry(db: Any, ledger: gr.Ledger, index: int, old: str, new: str) -> None:
    """Replace text in the stored data of one entry, behind the ledger's back."""
    if isinstance(ledger, gr.MemoryLedger):
        i, hash_, data = ledger._rows[index]
        ledger._rows[index] = (i, hash_, data.replace(old, new))
        return
    if isinstance(ledger, gr.PostgresLedger):
        with pg_server.connect(ledger.dsn, ledger.schema) as pg:
            pg.execute("UPDATE guardrails_entries SET data = replace(data, %s, %s) WHERE idx = %s",
                       (old, new, index))
        return
    assert isinstance(ledger, gr.SQLiteLedger)
    with db(ledger.path) as conn:
        conn.execute("UPDATE guardrails_entries SET data = replace(data, ?, ?) WHERE idx = ?",
                     (old, new, index))


def test_verify_names_the_first_altered_entry(ledger: gr.Ledger, db: Any) -> None:
    """An entry edited after the fact is named by index (and, for files, with the path)."""
    history(ledger)
    tamper_entry(db, ledger, 2, '"verdict":"rejected"', '"verdict":"accepted"')
    tamper_entry(db, ledger, 3, '"detail":"x"', '"detail":"y"')
    report = ledger.verify()
    assert not report.ok and report.index == 2
    assert "entry 2 was altered" in str(report.problem)
    if isinstance(ledger, gr.SQLiteLedger):
        assert str(ledger.path) in str(report.problem)
    if isinstance(ledger, gr.PostgresLedger):
        assert "postgresql://" in str(report.problem) and ledger.schema in str(report.problem)


# -- stores several processes share (SQLite file, PostgreSQL database) --------------------


def test_store_reopens_with_everything(store_factory: Any) -> None:
    """A store opened again has the same entries, served version, anchor, states and tree."""
    first = store_factory()
    history(first)
    entries, root = list(first.entries()), first.root()
    again = store_factory()
    assert list(again.entries()) == entries and again.root() == root
    assert (again.served_version(), again.anchor_version(), len(again)) == (V2, V0, 5)
    assert again.get_state(V1) == STATE_1
    assert again.verify().ok


def test_two_handles_share_compare_and_swap(store_factory: Any) -> None:
    """Two ledger objects on one store (as two replicas would be) honour each other's
    promotions, and each sees the other's entries."""
    one, two = store_factory(), store_factory()
    genesis(one)
    assert accept(one, V0, STATE_1) is not None
    assert accept(two, V0, STATE_2) is None
    assert two.served_version() == V1 and len(two) == 2
    assert accept(two, V1, STATE_2) is not None
    assert one.served_version() == V2 and [e.index for e in one.entries()] == [0, 1, 2]
    assert one.root() == two.root() and one.verify().ok and two.verify().ok


def test_handles_append_one_chain_concurrently(store_factory: Any) -> None:
    """Handles on one store appending from several threads at once write one total order: one
    winner per parent, no entry lost, the chain and the Merkle tree verify on every handle."""
    handles = [store_factory() for _ in range(4)]
    genesis(handles[0])
    barrier = threading.Barrier(len(handles))
    wins: list[gr.Decision] = []

    def run(i: int) -> None:
        ledger = handles[i]
        barrier.wait()
        for round_ in range(5):
            served = ledger.served_version()
            assert served is not None
            won = accept(ledger, served, {"prompt": f"h{i} r{round_}"})
            if won is not None:
                wins.append(won)
            ledger.record_event("tried", handle=i, round=round_)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(handles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parents = [w.parent for w in wins]
    assert len(parents) == len(set(parents)), "two promotions from one parent"
    assert len(handles[0]) == 1 + len(wins) + 4 * 5
    for ledger in handles:
        report = ledger.verify()
        assert report.ok, report.problem
        assert report.served == wins[-1].candidate == ledger.served_version()
    assert len({ledger.root() for ledger in handles}) == 1


# -- SQLite specifics ---------------------------------------------------------------------


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite"


def test_sqlite_reopens_from_disk(sqlite_path: Path) -> None:
    """A reopened SQLite ledger has the same entries, served version, anchor and states."""
    first = gr.SQLiteLedger(sqlite_path)
    history(first)
    entries = list(first.entries())
    first.close()
    again = gr.SQLiteLedger(sqlite_path)
    assert list(again.entries()) == entries
    assert (again.served_version(), again.anchor_version(), len(again)) == (V2, V0, 5)
    assert again.get_state(V1) == STATE_1
    assert again.verify().ok
    again.close()


def test_sqlite_creates_parent_directories(tmp_path: Path) -> None:
    """The ledger file's directory is created when missing."""
    ledger = gr.SQLiteLedger(tmp_path / "a" / "b" / "ledger.sqlite")
    assert ledger.path.exists()
    ledger.close()


def test_two_sqlite_handles_share_compare_and_swap(sqlite_path: Path) -> None:
    """Two ledger objects on one file (as two processes would be) honour each other's
    promotions."""
    one, two = gr.SQLiteLedger(sqlite_path), gr.SQLiteLedger(sqlite_path)
    genesis(one)
    assert accept(one, V0, STATE_1) is not None
    assert accept(two, V0, STATE_2) is None
    assert two.served_version() == V1 and len(two) == 2
    one.close()
    two.close()


def test_foreign_file_names_the_file(tmp_path: Path) -> None:
    """A file that is not a database gives LedgerIntegrityError naming the file."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, just some text that is long enough" * 20)
    with pytest.raises(gr.LedgerIntegrityError, match=f"{path}: not a guardrails ledger"):
        gr.SQLiteLedger(path)


def test_foreign_database_names_the_file(tmp_path: Path, db: Any) -> None:
    """Another application's SQLite database is refused, naming the file, and left as it was."""
    path = tmp_path / "app.sqlite"
    with db(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(gr.LedgerIntegrityError, match=f"{path}: not a guardrails ledger"):
        gr.SQLiteLedger(path)
    with db(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"users"}


def test_newer_schema_is_refused(sqlite_path: Path, db: Any) -> None:
    """A ledger written by a newer library version is refused with the fix named."""
    gr.SQLiteLedger(sqlite_path).close()
    with db(sqlite_path) as conn:
        conn.execute("UPDATE guardrails_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(gr.LedgerIntegrityError, match=r"schema 99 is newer.*upgrade"):
        gr.SQLiteLedger(sqlite_path)


def test_sqlite_removed_entry_is_named(sqlite_path: Path, db: Any) -> None:
    """Deleting an entry from the file is caught, naming the missing index."""
    ledger = gr.SQLiteLedger(sqlite_path)
    history(ledger)
    with db(sqlite_path) as conn:
        conn.execute("DELETE FROM guardrails_entries WHERE idx = 2")
    report = ledger.verify()
    assert not report.ok and report.index == 2
    assert "entry 2 is missing" in str(report.problem)
    ledger.close()


def test_sqlite_altered_state_is_found(sqlite_path: Path, db: Any) -> None:
    """A stored state edited in the file no longer matches its version."""
    ledger = gr.SQLiteLedger(sqlite_path)
    history(ledger)
    with db(sqlite_path) as conn:
        conn.execute("UPDATE guardrails_states SET data = '{\"prompt\":\"evil\"}' WHERE version=?",
                     (V1,))
    report = ledger.verify()
    assert not report.ok and f"stored state {V1[:12]} was altered" in str(report.problem)
    ledger.close()


@pytest.mark.parametrize("table", ["guardrails_entries", "guardrails_states"])
@pytest.mark.parametrize("garbage", [False, True])
def test_sqlite_bytes_instead_of_text_is_reported_not_raised(
    sqlite_path: Path, table: str, garbage: bool, db: Any
) -> None:
    """A record whose data was rewritten as raw bytes (garbage or its own content) fails
    verification instead of raising."""
    ledger = gr.SQLiteLedger(sqlite_path)
    history(ledger)
    with db(sqlite_path) as conn:
        conn.execute(f"UPDATE {table} SET data = CASE WHEN ? THEN X'FF00' "
                     "ELSE CAST(data AS BLOB) END", (garbage,))
    report = ledger.verify()
    assert not report.ok
    ledger.close()


def test_memory_removed_entry_is_named() -> None:
    """Deleting an entry from a memory ledger is caught, naming the missing index."""
    ledger = gr.MemoryLedger()
    history(ledger)
    del ledger._rows[1]
    report = ledger.verify()
    assert not report.ok and report.index == 1
