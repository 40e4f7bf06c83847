"""Where replicas share a rollout: its state (compare-and-swap on ``seq``) and the live evidence.

One SQL implementation for SQLite and PostgreSQL. Every call and every
feedback value has a unique id (the response id), inserted with
``ON CONFLICT DO NOTHING``, so a replica that flushes twice, or a user who
rates twice, is counted once. At most one rollout is active per store
(a unique partial index), so two replicas cannot start two at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..stats import PairCounts
from ._judge import StepEvidence
from ._machine import RolloutState

CallRow = tuple[str, str, int, str, int, int | None, str | None, float | None]
"""(response id, attempt, step, arm, failed, incumbent failed (pairs only), safety violation,
seconds the call took (calls in a step; ``None`` for shadow rows, whose latency is not
comparable)).

``arm`` is ``candidate`` or ``incumbent`` (a call in a step), ``pair`` (a shadow pair) or
``unpaired`` (a shadow copy that raised or timed out, under ``shadow_failures = "limits"``:
a candidate failure for the limits, never part of the paired test).

Feedback on a response id scores the answer the user got (the incumbent's, for a shadow
pair); feedback on ``id + ":shadow"`` scores the candidate's shadow answer."""

_TABLES = """
CREATE TABLE IF NOT EXISTS guardrails_rollout_state (
    attempt TEXT PRIMARY KEY, seq INTEGER NOT NULL, active INTEGER NOT NULL, data TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS guardrails_rollout_one_active
    ON guardrails_rollout_state (active) WHERE active = 1;
CREATE TABLE IF NOT EXISTS guardrails_rollout_calls (
    n {serial}, id TEXT NOT NULL UNIQUE, attempt TEXT NOT NULL, step INTEGER NOT NULL,
    arm TEXT NOT NULL, failed INTEGER NOT NULL, inc_failed INTEGER, safety TEXT, latency REAL);
CREATE INDEX IF NOT EXISTS guardrails_rollout_calls_attempt
    ON guardrails_rollout_calls (attempt, n);
CREATE TABLE IF NOT EXISTS guardrails_rollout_feedback (id TEXT PRIMARY KEY, bad INTEGER NOT NULL)
"""

_EVIDENCE = """
SELECT c.step, c.arm,
       CASE WHEN c.arm <> 'pair' AND f.bad = 1 THEN 1
            WHEN c.arm = 'pair' AND s.bad = 1 THEN 1 ELSE c.failed END,
       CASE WHEN c.arm = 'pair' AND f.bad = 1 THEN 1 ELSE c.inc_failed END, c.safety, c.latency
FROM guardrails_rollout_calls c LEFT JOIN guardrails_rollout_feedback f ON f.id = c.id
LEFT JOIN guardrails_rollout_feedback s ON s.id = c.id || ':shadow'
WHERE c.attempt = ? ORDER BY c.n
"""


class Connect(Protocol):
    def __call__(self) -> contextlib.AbstractContextManager[Any]: ...


class RolloutStore:
    """The shared rollout tables on one database (see the module docstring).

    ``SQLiteRolloutStore`` and ``PostgresRolloutStore`` give the connection;
    every method is one transaction and safe across threads and processes.
    """

    def __init__(self, connect: Connect, placeholder: str, serial: str,
                 init_lock: str | None = None) -> None:
        self._connect = connect
        self._ph = placeholder
        with self._connect() as conn:
            if init_lock:
                conn.execute(init_lock)  # replicas creating the tables at once
            for statement in _TABLES.format(serial=serial).split(";"):
                conn.execute(statement)
            columns = conn.execute("SELECT * FROM guardrails_rollout_calls WHERE 1 = 0")
            if "latency" not in [c[0] for c in columns.description]:
                # A store made before the latency test (0.x unreleased): add the column.
                conn.execute("ALTER TABLE guardrails_rollout_calls ADD COLUMN latency REAL")

    def _sql(self, text: str) -> str:
        return text.replace("?", self._ph)

    def start(self, state: RolloutState) -> bool:
        """Record a new attempt as the active rollout; ``False`` if another one is active."""
        try:
            with self._connect() as conn:
                conn.execute(self._sql("INSERT INTO guardrails_rollout_state VALUES (?, ?, 1, ?)"),
                             (state.attempt, state.seq, state.model_dump_json()))
        except Exception as exc:
            if "unique" in str(exc).lower():
                return False
            raise
        return True

    def active(self) -> RolloutState | None:
        """The rollout in progress (shadow, a step or paused), if any."""
        with self._connect() as conn:
            row = conn.execute("SELECT data FROM guardrails_rollout_state WHERE active = 1"
                               ).fetchone()
        return None if row is None else RolloutState.model_validate_json(row[0])

    def get(self, attempt: str) -> RolloutState | None:
        with self._connect() as conn:
            row = conn.execute(self._sql("SELECT data FROM guardrails_rollout_state "
                                         "WHERE attempt = ?"), (attempt,)).fetchone()
        return None if row is None else RolloutState.model_validate_json(row[0])

    def latest(self) -> RolloutState | None:
        """The active rollout, else the last one that ended (for ``status``)."""
        found = self.active()
        if found is not None:
            return found
        with self._connect() as conn:
            rows = conn.execute("SELECT data FROM guardrails_rollout_state").fetchall()
        states = [RolloutState.model_validate_json(r[0]) for r in rows]
        return max(states, key=lambda s: s.entered_at, default=None)

    def swap(self, old: RolloutState, new: RolloutState) -> bool:
        """Replace ``old`` by ``new`` if nobody moved it meanwhile (compare-and-swap on seq)."""
        with self._connect() as conn:
            cursor = conn.execute(self._sql(
                "UPDATE guardrails_rollout_state SET seq = ?, active = ?, data = ? "
                "WHERE attempt = ? AND seq = ?"),
                (new.seq, 0 if new.final else 1, new.model_dump_json(), old.attempt, old.seq))
            return bool(cursor.rowcount == 1)

    def add_calls(self, rows: Sequence[CallRow]) -> None:
        """Store observed calls; an id already stored is ignored (counted once)."""
        if not rows:
            return
        with self._connect() as conn:
            conn.cursor().executemany(self._sql(
                "INSERT INTO guardrails_rollout_calls (id, attempt, step, arm, failed, "
                "inc_failed, safety, latency) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING"), list(rows))

    def add_feedback(self, response_id: str, bad: bool) -> bool:
        """Store delayed feedback for a response; ``False`` when it was already given."""
        with self._connect() as conn:
            cursor = conn.execute(self._sql(
                "INSERT INTO guardrails_rollout_feedback VALUES (?, ?) ON CONFLICT (id) DO NOTHING"),
                (response_id, int(bad)))
            return bool(cursor.rowcount == 1)

    def known_call(self, response_id: str) -> bool:
        with self._connect() as conn:
            return conn.execute(self._sql("SELECT 1 FROM guardrails_rollout_calls WHERE id = ?"),
                                (response_id,)).fetchone() is not None

    def evidence(self, state: RolloutState, elapsed: float) -> StepEvidence:
        """The attempt's evidence across all replicas, reduced for the judge."""
        with self._connect() as conn:
            rows = conn.execute(self._sql(_EVIDENCE), (state.attempt,)).fetchall()
        return reduce_rows(rows, state.step, elapsed)

    def count_calls(self, attempt: str) -> int:
        with self._connect() as conn:
            row = conn.execute(self._sql("SELECT COUNT(*) FROM guardrails_rollout_calls "
                                         "WHERE attempt = ?"), (attempt,)).fetchone()
        return int(row[0])


def reduce_rows(rows: Sequence[Sequence[Any]], step: int, elapsed: float) -> StepEvidence:
    """Pairs (real ones in shadow, k-th candidate with k-th incumbent call in a split), the
    current step's samples and failures, the candidate's trailing run of failures, and the
    split's latency pairs (rows may omit the latency column: none is then counted)."""
    pairs: list[tuple[bool, bool]] = []
    slower = faster = timed = 0
    waiting: dict[str, list[tuple[bool, Any]]] = {"candidate": [], "incumbent": []}
    samples = failures = consecutive = 0
    violation: str | None = None
    for row in rows:
        row_step, arm, failed, inc_failed, safety = row[:5]
        latency = row[5] if len(row) > 5 else None
        if arm == "pair":
            pairs.append((not inc_failed, not failed))
        elif arm == "unpaired":
            pass  # no answer to compare: only the limits below see it
        else:
            other = waiting["incumbent" if arm == "candidate" else "candidate"]
            if other:
                # The latest unpaired call of the other arm: by arrival order, never by outcome.
                (o_failed, o_latency) = other.pop()
                cand, inc = (failed, o_failed) if arm == "candidate" else (o_failed, failed)
                pairs.append((not inc, not cand))
                c_lat, i_lat = (latency, o_latency) if arm == "candidate" else (o_latency, latency)
                if c_lat is not None and i_lat is not None:
                    timed += 1
                    slower += c_lat > i_lat
                    faster += c_lat < i_lat
            else:
                waiting[arm].append((bool(failed), latency))
        if arm != "incumbent":
            if row_step == step:
                samples += 1
                failures += bool(failed)
            consecutive = consecutive + 1 if failed else 0
            violation = violation or safety
    return StepEvidence(pairs=PairCounts.from_pairs(pairs), step_samples=samples,
                        step_failures=failures, consecutive_errors=consecutive,
                        safety_violation=violation, elapsed=elapsed,
                        latency=PairCounts(n=timed, regressions=slower, fixes=faster))


class _Serialized:
    """One SQLite connection per store, used under a lock, one transaction per block."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False,
                                     isolation_level=None)
        if path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")


class SQLiteRolloutStore(RolloutStore):
    """The embedded store: an SQLite file beside the ledger (``:memory:`` for a memory ledger)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(_Serialized(self.path), "?", "INTEGER PRIMARY KEY AUTOINCREMENT")


class PostgresRolloutStore(RolloutStore):
    """The shared store: tables beside a PostgreSQL ledger (same DSN and schema)."""

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        self._lock = threading.Lock()
        self._conn = psycopg.connect(dsn, autocommit=True)
        if schema:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(4179201703)")
                self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
            self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        super().__init__(self._transaction, "%s", "BIGSERIAL PRIMARY KEY",
                         "SELECT pg_advisory_xact_lock(4179201703)")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock, self._conn.transaction():
            yield self._conn

    def close(self) -> None:
        self._conn.close()


def store_for(ledger: Any) -> RolloutStore:
    """The rollout store that goes with a ledger: beside its SQLite file, in its PostgreSQL
    schema, or in memory for a ``MemoryLedger`` (one process only)."""
    dsn = getattr(ledger, "dsn", None)
    if isinstance(dsn, str):
        return PostgresRolloutStore(dsn, getattr(ledger, "schema", None))
    path = getattr(ledger, "path", None)
    if path is not None:
        return SQLiteRolloutStore(f"{path}-rollout")
    return SQLiteRolloutStore(":memory:")



