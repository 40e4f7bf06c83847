"""Property tests (hypothesis) for the laws the gate promises, over arbitrary JSON patches."""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonpointer import JsonPointer

import guardrails as gr
from guardrails.testing import DictClient

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies -------------------------------------------------------------------------------

# Keys with the characters that need escaping in pointers ('~' -> '~0', '/' -> '~1'), digits
# that look like list indexes, '-' and the empty key.
KEYS = st.text(alphabet="ab~/0-1", max_size=3)
SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, -0.0, 1.0]) \
    | st.text(alphabet="xy~/", max_size=3)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
STATES = st.dictionaries(KEYS, VALUES, min_size=1, max_size=4)
OPS = ["add", "remove", "replace", "move", "copy", "test"]


def pointer(tokens: list[str]) -> str:
    return str(JsonPointer.from_parts(tokens))


def pointers_of(doc: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every pointer that resolves in ``doc``, the root included."""
    yield pointer(list(prefix))
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from pointers_of(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from pointers_of(value, (*prefix, str(index)))


def containers_of(doc: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """The pointers of every object and array in ``doc``, the root included."""
    if isinstance(doc, dict | list):
        yield pointer(list(prefix))
        items = doc.items() if isinstance(doc, dict) else enumerate(doc)
        for key, value in items:
            yield from containers_of(value, (*prefix, str(key)))


RANDOM_POINTERS = st.lists(KEYS | st.sampled_from(["0", "1", "-"]), min_size=1,
                           max_size=3).map(pointer)


def pointer_pool(state: dict[str, Any]) -> st.SearchStrategy[str]:
    """Mostly the state's own pointers, then new places inside its objects and arrays ('-',
    a next index, a new key), then random pointers."""
    own = [p for p in pointers_of(state) if p]
    inside = [p + suffix for p in containers_of(state) for suffix in ("/-", "/0", "/new")]
    own_pointers = st.sampled_from(own)
    return st.one_of(own_pointers, own_pointers, own_pointers, st.sampled_from(inside),
                     RANDOM_POINTERS)


@st.composite
def operation(draw: st.DrawFn, pool: st.SearchStrategy[str], state: Any) -> dict[str, Any]:
    """One RFC 6902 operation over ``pool``; mostly ones that apply to ``state``."""
    op = draw(st.sampled_from(OPS * 2 + ["add", "replace"] * 3))
    path = draw(pool)
    result: dict[str, Any] = {"op": op, "path": path}
    if op in ("add", "replace"):
        result["value"] = draw(VALUES)
    if op == "test":
        current = rfc_resolve(state, path)
        use_current = current is not MISSING and draw(st.booleans())
        result["value"] = copy.deepcopy(current) if use_current else draw(VALUES)
    if op in ("move", "copy"):
        result["from"] = draw(pool)
    return result


@st.composite
def patch_for(draw: st.DrawFn, state: dict[str, Any], frozen: list[str]) -> list[dict[str, Any]]:
    """A patch of up to three operations aimed at ``state`` and near its frozen pointers."""
    near_frozen = st.sampled_from([*frozen, *(p.rsplit("/", 1)[0] or p for p in frozen)])
    pool = st.one_of(pointer_pool(state), near_frozen)
    ops = draw(st.lists(operation(pool, state), max_size=2))
    if not ops or draw(st.booleans()):
        # A change no frozen pointer covers ('z' is not a KEYS character), so that a good
        # share of patches passes the static checks and reaches acceptance.
        ops.insert(draw(st.integers(0, len(ops))),
                   {"op": "add", "path": "/z", "value": draw(VALUES)})
    return ops


@st.composite
def scenario(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A state and one or two frozen pointers: its own, one past its own, or random ones."""
    state = draw(STATES)
    frozen = draw(st.lists(pointer_pool(state).filter(bool), min_size=1, max_size=2,
                           unique=True))
    return state, frozen


# -- helpers ----------------------------------------------------------------------------------

MISSING = object()


def rfc_resolve(doc: Any, ptr: str) -> Any:
    """Resolve ``ptr`` in ``doc`` exactly as RFC 6901 says, written independently of the core."""
    for token in JsonPointer(ptr).parts:
        if isinstance(doc, dict):
            if token not in doc:
                return MISSING
            doc = doc[token]
        elif isinstance(doc, list):
            if not re.fullmatch(r"0|[1-9][0-9]*", token) or int(token) >= len(doc):
                return MISSING
            doc = doc[int(token)]
        else:
            return MISSING
    return doc


def same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    return gr.canonical_json(a) == gr.canonical_json(b)


def always_ok(state: dict[str, Any], request: gr.Request) -> str:
    return "ok"


CASES = [gr.CanaryCase(id="works", input="ping", expect="ok"),
         gr.CanaryCase(id="safe", input="pong", expect="ok", tags=("safety",))]


class AliasingClient(DictClient):
    """A DictClient whose candidates keep the very dict the guard hands them (no copy), so any
    sharing between candidate and incumbent would show."""

    def with_state(self, state: dict[str, Any]) -> AliasingClient:
        clone = AliasingClient({}, self.responder)
        clone._state = state
        return clone


def last_accepted_candidate(ledger: gr.Ledger) -> str | None:
    accepted = [e.decision for e in ledger.entries()
                if e.decision is not None and e.decision.accepted]
    return accepted[-1].candidate if accepted else None


# -- patches and frozen pointers, without the guard -------------------------------------------


@SETTINGS
@given(STATES, st.data())
def test_apply_returns_an_object_or_raises_value_error(state: dict[str, Any],
                                                       data: st.DataObject) -> None:
    """Applying any well-formed patch either gives a new JSON object or raises ValueError, and
    never changes the state it was given."""
    patch = data.draw(st.lists(operation(pointer_pool(state), state), min_size=1,
                               max_size=4))
    before = copy.deepcopy(state)
    proposal = gr.UpdateProposal(parent="0" * 64, patch=patch)
    try:
        result = proposal.apply(state)
    except ValueError:
        pass
    else:
        assert isinstance(result, dict)
        gr.canonical_json(result)
    assert state == before and gr.canonical_json(state) == gr.canonical_json(before)


@SETTINGS
@given(scenario(), st.data())
def test_check_frozen_flags_every_change_at_a_frozen_pointer(
    case: tuple[dict[str, Any], list[str]], data: st.DataObject
) -> None:
    """check_frozen is silent exactly when every frozen pointer resolves (RFC 6901) to the same
    JSON value before and after the patch."""
    state, frozen = case
    patch = data.draw(patch_for(state, frozen))
    try:
        candidate = gr.UpdateProposal(parent="0" * 64, patch=patch).apply(state)
    except ValueError:
        return
    changed = {p for p in frozen if not same(rfc_resolve(state, p), rfc_resolve(candidate, p))}
    constraints = gr.FrozenConstraints(frozen=frozen)
    flagged = {f.evidence["pointer"] for f in constraints.check_frozen(state, candidate)}
    assert flagged == changed


# -- the gate ---------------------------------------------------------------------------------


def test_gate_laws_over_arbitrary_patches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Over arbitrary patch sequences: (1) no accepted decision changes a frozen value, (2) the
    served version is always the candidate of the last accepted ledger record, (3) a review
    never mutates the incumbent; and a good share of proposals is accepted, so (1) is tested."""
    verdicts: Counter[str] = Counter()
    root = tmp_path_factory.mktemp("gate-laws")

    @SETTINGS
    @given(scenario(), st.sampled_from(["memory", "sqlite"]), st.integers(1, 4), st.data())
    def laws(case: tuple[dict[str, Any], list[str]], backend: str, rounds: int,
             data: st.DataObject) -> None:
        state, frozen = case
        ledger: gr.Ledger
        if backend == "sqlite":
            ledger = gr.SQLiteLedger(Path(tempfile.mkdtemp(dir=root)) / "ledger.sqlite")
        else:
            ledger = gr.MemoryLedger()
        # Pointers at nothing yet are drawn on purpose (an add there must be caught): they say so.
        absent = tuple(p for p in frozen if rfc_resolve(state, p) is MISSING)
        guard = gr.Guard(gr.FrozenConstraints(frozen=frozen, may_be_absent=absent), CASES,
                         ledger=ledger, case_timeout=5.0)
        guarded = guard.wrap(AliasingClient(state, always_ok))
        try:
            for _ in range(rounds):
                patch = data.draw(patch_for(guarded.state(), frozen))
                incumbent = guarded.client
                incumbent_before = copy.deepcopy(incumbent._state)
                parent = guarded.version
                parent_state = guarded.state()
                stale = data.draw(st.sampled_from([False] * 19 + [True]))
                target = ledger.get_state(parent) if not stale else parent_state
                decision = guarded.propose(gr.UpdateProposal(
                    parent="f" * 64 if stale else parent, patch=patch))
                verdicts[decision.verdict.value] += 1

                # (3) the incumbent object and its recorded state are untouched
                assert gr.canonical_json(incumbent._state) == gr.canonical_json(incumbent_before)
                assert ledger.get_state(parent) == target
                # (2) what is served is the last accepted record's candidate, in every view
                assert guarded.version == last_accepted_candidate(ledger)
                assert guarded.version == ledger.served_version()
                assert gr.state_version(guarded.client.snapshot()) == guarded.version
                if decision.accepted:
                    assert not stale
                    candidate = ledger.get_state(guarded.version)
                    # (1) every frozen pointer resolves to the same value as in the parent
                    for ptr in frozen:
                        assert same(rfc_resolve(parent_state, ptr), rfc_resolve(candidate, ptr))
                    assert candidate == gr.UpdateProposal(parent=parent, patch=patch).apply(
                        parent_state)
                else:
                    assert guarded.version == parent
            assert ledger.verify().ok
        finally:
            if isinstance(ledger, gr.SQLiteLedger):
                ledger.close()

    laws()
    total = sum(verdicts.values())
    assert verdicts["error"] == 0 and verdicts["inconclusive"] == 0, verdicts
    assert verdicts["accepted"] >= 0.1 * total, verdicts
    assert verdicts["rejected"] >= 0.15 * total, verdicts


# -- tamper evidence --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A closed SQLite ledger with accepted, rejected and event entries: (path, entries,
    states)."""
    path = tmp_path_factory.mktemp("pristine") / "ledger.sqlite"
    ledger = gr.SQLiteLedger(path)
    guard = gr.Guard(gr.FrozenConstraints(frozen=["/locked"]), CASES, ledger=ledger)
    guarded = guard.wrap(DictClient({"locked": 1, "prompt": "a"}, always_ok))
    for ops in ([{"op": "replace", "path": "/prompt", "value": "b"}],
                [{"op": "replace", "path": "/locked", "value": 2}],
                [{"op": "add", "path": "/extra", "value": [1, "x"]}],
                [{"op": "remove", "path": "/missing"}],
                [{"op": "replace", "path": "/prompt", "value": "c~/é"}]):
        guarded.propose(gr.UpdateProposal(parent=guarded.version, patch=ops))
    ledger.record_event("note", detail="an event")
    report = ledger.verify()
    assert report.ok
    ledger.close()  # checkpoints the write-ahead log into the file the tests copy
    with open_db(path) as conn:
        (states,) = conn.execute("SELECT count(*) FROM guardrails_states").fetchone()
    return path, report.size, states


@contextlib.contextmanager
def open_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection to a ledger file, committed and closed on leaving."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def tampered_copy(pristine: Path) -> Path:
    target = Path(tempfile.mkdtemp(dir=pristine.parent)) / "ledger.sqlite"
    shutil.copyfile(pristine, target)
    return target


def flip_byte(value: str, position: int, new: int) -> str | bytes:
    """``value`` with one UTF-8 byte replaced; text if it still decodes, else raw bytes."""
    raw = bytearray(value.encode("utf-8"))
    position %= len(raw)
    raw[position] = new if new != raw[position] else (new + 1) % 256
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return bytes(raw)


def verify_file(path: Path) -> gr.LedgerReport:
    ledger = gr.SQLiteLedger(path)
    try:
        return ledger.verify()
    finally:
        ledger.close()


TABLES = {
    "entry data": ("guardrails_entries", "data", "idx"),
    "entry hash": ("guardrails_entries", "hash", "idx"),
    "state data": ("guardrails_states", "data", "rowid"),
    "state version": ("guardrails_states", "version", "rowid"),
}


@SETTINGS
@given(st.sampled_from(sorted(TABLES)), st.integers(0, 10_000), st.integers(0, 10_000),
       st.integers(0, 255))
def test_verify_detects_any_changed_byte(
    pristine_ledger: tuple[Path, int, int], where: str, row: int, position: int, new: int
) -> None:
    """Changing any single byte of any stored entry or state (data or hash) fails verify()."""
    pristine, _, _ = pristine_ledger
    table, column, key = TABLES[where]
    path = tampered_copy(pristine)
    with open_db(path) as conn:
        keys = [r[0] for r in conn.execute(f"SELECT {key} FROM {table} ORDER BY {key}")]
        target = keys[row % len(keys)]
        (old,) = conn.execute(f"SELECT {column} FROM {table} WHERE {key}=?", (target,)).fetchone()
        conn.execute(f"UPDATE {table} SET {column}=? WHERE {key}=?",
                     (flip_byte(old, position, new), target))
    report = verify_file(path)
    assert not report.ok
    if table == "guardrails_entries":
        assert report.index == target
        assert str(path) in str(report.problem)


@SETTINGS
@given(st.integers(0, 10_000))
def test_verify_detects_any_removed_entry(pristine_ledger: tuple[Path, int, int],
                                          row: int) -> None:
    """Deleting any one entry, the last included, fails verify()."""
    pristine, entries, _ = pristine_ledger
    path = tampered_copy(pristine)
    target = row % entries
    with open_db(path) as conn:
        conn.execute("DELETE FROM guardrails_entries WHERE idx=?", (target,))
    report = verify_file(path)
    assert not report.ok
    if target < entries - 1:
        assert report.index == target


def test_verify_detects_removal_of_the_last_entry(pristine_ledger: tuple[Path, int, int]) -> None:
    """Deleting the newest entry is caught by the ledger head, whichever entry that is."""
    pristine, entries, _ = pristine_ledger
    path = tampered_copy(pristine)
    with open_db(path) as conn:
        conn.execute("DELETE FROM guardrails_entries WHERE idx=?", (entries - 1,))
    report = verify_file(path)
    assert not report.ok and "entries removed or appended" in str(report.problem)


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_verify_detects_any_two_reordered_entries(pristine_ledger: tuple[Path, int, int],
                                                  first: int, offset: int) -> None:
    """Swapping the contents of any two entries fails verify(), naming the earlier one."""
    pristine, entries, _ = pristine_ledger
    i = first % entries
    j = (i + 1 + offset % (entries - 1)) % entries
    path = tampered_copy(pristine)
    with open_db(path) as conn:
        rows = {idx: (h, d) for idx, h, d in conn.execute(
            "SELECT idx, hash, data FROM guardrails_entries WHERE idx IN (?, ?)", (i, j))}
        for idx, other in ((i, j), (j, i)):
            conn.execute("UPDATE guardrails_entries SET hash=?, data=? WHERE idx=?",
                         (*rows[other], idx))
    report = verify_file(path)
    assert not report.ok
    assert report.index == min(i, j)
