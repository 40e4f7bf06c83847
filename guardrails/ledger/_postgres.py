"""The ledger and version store in PostgreSQL: several replicas, one truth.

``PostgresLedger`` is ``StoreLedger`` (the same entries, states, Merkle tree,
checkpoints, pending approvals and verification as ``SQLiteLedger``) over
PostgreSQL storage primitives, with a psycopg 3 connection pool.

*One writer at a time.* Every write transaction first locks one row
(``guardrails_meta`` key ``writer``, ``SELECT ... FOR UPDATE``). Under READ
COMMITTED, every statement after that lock sees everything committed before
it, so the head a transaction reads is the latest: appends are totally
ordered, each entry chains to the one before it, the Merkle nodes are
written in the entry's own transaction, and ``promote`` moves the served
pointer only if it still names the expected parent (compare-and-swap). The
loser gets ``None`` back, as with SQLite, and the guard records it as a
stale rejection.

*Replicas follow.* A promotion notifies (``pg_notify`` on a channel named
after the ledger's origin) in its transaction, so the notification is
delivered only if it commits. ``subscribe(callback)`` starts one watcher
thread per ledger object that LISTENs and also polls the served version
every ``poll_interval`` seconds, which bounds how long a replica can miss a
change when a notification is lost (connection dropped, a pooler that does
not pass LISTEN): see docs/deployment.md.

*Schema.* Tables are created and migrated by the library, recorded in the
version table ``guardrails_schema``; ``PostgresLedger.upgrade`` and
``guardrails db upgrade`` run the migrations explicitly. A database or
schema holding tables of the same names that guardrails did not create, or
a schema newer than this library, is refused before anything is served.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

import structlog

from .._canonical import canonical_json, state_version
from .._decision import Decision
from .._errors import ConfigError, LedgerIntegrityError
from ..blobs import BlobStore
from ._checkpoint import SigningKey, VerifierKey
from ._ledger import (
    LedgerBusyError,
    LedgerEntry,
    LedgerReport,
    PendingApproval,
    StoreLedger,
    _entry,
    _ReadOnlyTx,
    verify_records,
)
from ._merkle import DictNodeStore, MerkleTree

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    Connection = psycopg.Connection[tuple[Any, ...]]

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
"""The PostgreSQL schema this library writes (numbered apart from SQLite's)."""

VERSION_TABLE = "guardrails_schema"
NODE_TABLE = "guardrails_merkle_nodes"

URL_SCHEMES = ("postgresql://", "postgres://")
"""A ``[ledger] path`` starting with one of these names a PostgreSQL store."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the tables of SQLite's schema 2, and the row every writer locks.
    (
        f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
        "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), library TEXT NOT NULL)",
        "CREATE TABLE guardrails_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE guardrails_entries (idx BIGINT PRIMARY KEY, hash TEXT NOT NULL, "
        "data TEXT NOT NULL)",
        "CREATE TABLE guardrails_states (version TEXT PRIMARY KEY, data TEXT NOT NULL)",
        "CREATE TABLE guardrails_pending (id TEXT PRIMARY KEY, status TEXT NOT NULL, "
        "data TEXT NOT NULL)",
        f"CREATE TABLE {NODE_TABLE} (level INTEGER NOT NULL, idx BIGINT NOT NULL, "
        "hash BYTEA NOT NULL, PRIMARY KEY (level, idx))",
        "INSERT INTO guardrails_meta (key, value) VALUES ('writer', 'the row every write locks')",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_COLUMNS: dict[str, frozenset[str]] = {
    VERSION_TABLE: frozenset({"version", "applied_at", "library"}),
    "guardrails_meta": frozenset({"key", "value"}),
    "guardrails_entries": frozenset({"idx", "hash", "data"}),
    "guardrails_states": frozenset({"version", "data"}),
    "guardrails_pending": frozenset({"id", "status", "data"}),
    NODE_TABLE: frozenset({"level", "idx", "hash"}),
}
"""The tables of the current schema and their columns."""

_LOCK_WRITER = "SELECT value FROM guardrails_meta WHERE key = 'writer' FOR UPDATE"
_MIGRATION_LOCK = 0x67726472
"""First key of the advisory lock that serialises migrations (the second is the schema)."""
_TICK = 0.1
"""The watcher checks for close() at least this often (seconds)."""
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def is_postgres_url(value: str) -> bool:
    """Whether a ledger location is a PostgreSQL URL rather than a SQLite path."""
    return value.lower().startswith(URL_SCHEMES)


def _modules() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL ledger needs psycopg 3 and psycopg-pool ({exc}); install them with: "
            "pip install 'guardrails-middleware[postgres]'") from None
    return psycopg, psycopg_pool


def redact(dsn: str) -> str:
    """``dsn`` fit for messages and logs: ``postgresql://user@host:port/dbname``, no password."""
    import psycopg.conninfo

    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except Exception:
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn.split("?", 1)[0])
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


# ---------------------------------------------------------------------------
# Connecting, and explaining why not


def _conninfo(dsn: str, timeout: float) -> str:
    """``dsn`` with our connection defaults for whatever it leaves unset.

    ``connect_timeout`` and the TCP keepalive and user timeouts make a dead
    server or a silent network fail a call within about ``timeout`` seconds
    instead of hanging it.
    """
    import psycopg
    import psycopg.conninfo

    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ConfigError(
            f"{dsn.split('?', 1)[0]!r} is not a PostgreSQL connection URL ({_first_line(exc)}); "
            "write it as postgresql://USER@HOST:PORT/DATABASE") from None
    defaults: dict[str, str | int] = {
        "connect_timeout": max(2, math.ceil(timeout)),
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(timeout / 2)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(timeout * 1000),
        "application_name": "guardrails",
    }
    return psycopg.conninfo.make_conninfo(dsn, **{k: v for k, v in defaults.items()
                                                   if k not in given})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _explain_connect(exc: BaseException, where: str) -> ConfigError:
    """A connection failure as a ``ConfigError`` that names the problem and the fix."""
    text = str(exc)
    found = re.search(r'database "([^"]+)" does not exist', text)
    if found:
        return ConfigError(
            f"{where}: the database {found.group(1)!r} does not exist on that server; create it "
            f"(createdb {found.group(1)}, or CREATE DATABASE {found.group(1)}) or point the URL "
            "at an existing database")
    found = re.search(r'role "([^"]+)" does not exist', text)
    if found:
        return ConfigError(f"{where}: the server has no user (role) {found.group(1)!r}; create it "
                           "(CREATE ROLE ... LOGIN) or put an existing user in the URL")
    if "password" in text and ("authentication failed" in text or "no password" in text):
        return ConfigError(f"{where}: the server refused the password ({_first_line(exc)}); set it "
                           "in PGPASSWORD or ~/.pgpass rather than in the URL")
    return ConfigError(
        f"{where}: cannot connect to PostgreSQL ({_first_line(exc).removeprefix('connection failed: ')}"
        "); check that the server runs and accepts TCP connections at that host and port, and "
        "the user and password (PGPASSWORD or ~/.pgpass)")


def _session_settings(conn: Connection, schema: str | None, timeout: float,
                      read_only: bool = False) -> None:
    """Per-connection settings: the schema to use, how long anything may wait, read-only."""
    from psycopg import sql

    ms = int(timeout * 1000)
    if read_only:
        conn.execute("SET default_transaction_read_only = on")
    if schema is not None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(ms)))
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(ms)))
    # A writer that stalls while holding the writer lock must not stop every other replica.
    conn.execute(sql.SQL("SET idle_in_transaction_session_timeout = {}").format(
        sql.Literal(max(ms * 3, 10_000))))


# ---------------------------------------------------------------------------
# Schema: inspect, create, migrate


def _library_version() -> str:
    try:
        return metadata.version("guardrails-middleware")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _schema_name(conn: Connection, where: str) -> str:
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise ConfigError(f"{where}: the connection's search_path names no existing schema; "
                          "create the schema or give schema=... (in guardrails.toml: [ledger] "
                          "schema)")
    return str(row[0])


def _inspect(conn: Connection, where: str, schema: str | None) -> int:
    """The schema version found (0: no ledger tables yet); raises if the tables are not ours."""
    if schema is not None and conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                           (schema,)).fetchone() is None:
        return 0
    schema = schema or _schema_name(conn, where)
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE n.nspname = %s AND c.relname = ANY(%s)",
        (schema, list(_COLUMNS))).fetchall()
    present: dict[str, set[str]] = {}
    for table, column in rows:
        present.setdefault(table, set()).update([column] if column else [])
    fix = ("point the ledger at another database, or at its own schema (schema=..., in "
           "guardrails.toml [ledger] schema)")
    if VERSION_TABLE not in present:
        if present:
            raise LedgerIntegrityError(
                f"{where}: a table named {sorted(present)[0]} already exists in schema {schema!r} "
                f"but guardrails did not create it (there is no {VERSION_TABLE} table beside it); "
                f"{fix}")
        return 0
    if present[VERSION_TABLE] != _COLUMNS[VERSION_TABLE]:
        raise LedgerIntegrityError(
            f"{where}: the table {VERSION_TABLE} in schema {schema!r} is not a guardrails version "
            f"table (its columns are {', '.join(sorted(present[VERSION_TABLE]))}); {fix}")
    row = conn.execute(f"SELECT max(version) FROM {VERSION_TABLE}").fetchone()
    found = int(row[0]) if row and row[0] is not None else 0
    if found > SCHEMA_VERSION:
        raise LedgerIntegrityError(
            f"{where}: ledger schema {found} is newer than this library understands "
            f"({SCHEMA_VERSION}); upgrade guardrails-middleware on this host to the version the "
            "other replicas run")
    if found == SCHEMA_VERSION:
        for table, columns in _COLUMNS.items():
            if table not in present:
                raise LedgerIntegrityError(
                    f"{where}: the table {table} of ledger schema {found} is missing from schema "
                    f"{schema!r} (changed by hand); restore the database from a backup")
            if present[table] != columns:
                raise LedgerIntegrityError(
                    f"{where}: the table {table} in schema {schema!r} has columns "
                    f"{', '.join(sorted(present[table]))}, not those of a guardrails ledger "
                    f"({', '.join(sorted(columns))}); {fix}")
    return found


def _prepare(conn: Connection, schema: str | None, where: str, migrate: bool
             ) -> tuple[int, int]:
    """Migrate (or only inspect): the schema version before and after; errors explained."""
    import psycopg

    try:
        versions = _migrate(conn, schema, where) if migrate else (_inspect(conn, where, schema),) * 2
        if versions[1] and schema is not None:
            usable = conn.execute("SELECT has_schema_privilege(%s, 'USAGE')", (schema,)).fetchone()
            if not (usable and usable[0]):
                raise _not_allowed(where, "use", f"this role lacks USAGE on schema {schema}")
        return versions
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _not_allowed(where, "create" if migrate else "read", _first_line(exc)) from None
    except psycopg.Error as exc:
        raise ConfigError(f"{where}: cannot prepare the ledger's tables ({_first_line(exc)})"
                          ) from None


def _not_allowed(where: str, action: str, detail: str) -> ConfigError:
    return ConfigError(
        f"{where}: not allowed to {action} the ledger's tables ({detail}); run `guardrails db "
        "upgrade` as a role that may create tables in that schema, and grant this role USAGE on "
        "the schema and SELECT, INSERT and UPDATE on its tables")


def _migrate(conn: Connection, schema: str | None, where: str) -> tuple[int, int]:
    """Create or upgrade the tables in one transaction; ``(version before, version after)``."""
    from psycopg import sql

    with conn.transaction():
        # Replicas starting together: one migrates, the others wait and find it done.
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                     (_MIGRATION_LOCK, schema or _schema_name(conn, where)))
        if schema is not None:
            exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                  (schema,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        found = _inspect(conn, where, schema)
        target = schema or _schema_name(conn, where)
        if found < SCHEMA_VERSION:
            allowed = conn.execute("SELECT has_schema_privilege(%s, 'USAGE') AND "
                                   "has_schema_privilege(%s, 'CREATE')", (target, target)
                                   ).fetchone()
            if not (allowed and allowed[0]):
                raise _not_allowed(where, "create",
                                   f"this role lacks USAGE or CREATE on schema {target}")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, library) VALUES (%s, %s)",
                         (version, _library_version()))
        if found < SCHEMA_VERSION:
            log.info("guardrails.ledger_schema_upgraded", store=where, before=found,
                     after=SCHEMA_VERSION)
            _inspect(conn, where, schema)
    return found, SCHEMA_VERSION


def _check_schema_name(schema: str | None) -> None:
    if schema is not None and not _IDENTIFIER.fullmatch(schema):
        raise ConfigError(f"schema {schema!r} is not a plain lower-case SQL name; use letters, "
                          "digits and '_', starting with a letter (at most 63)")


# ---------------------------------------------------------------------------
# Storage primitives


class PostgresNodeStore:
    """The Merkle tree's nodes in ``guardrails_merkle_nodes``, through the ledger's connections.

    ``connection()`` gives the connection to use: inside a ledger write it is
    the write transaction's, so an entry and its nodes commit together;
    otherwise a pooled one. A node written twice raises
    ``psycopg.errors.UniqueViolation``: two writers disagree about the tree,
    which must never pass silently.
    """

    def __init__(self, connection: Callable[[], contextlib.AbstractContextManager[Connection]]
                 ) -> None:
        self._connection = connection

    def get(self, level: int, index: int) -> bytes | None:
        with self._connection() as conn:
            row = conn.execute(f"SELECT hash FROM {NODE_TABLE} WHERE level = %s AND idx = %s",
                               (level, index)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        with self._connection() as conn, conn.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {NODE_TABLE} (level, idx, hash) VALUES (%s, %s, %s)",
                               list(nodes))


class _PostgresTx:
    """``_Tx`` inside one write transaction that holds the writer lock."""

    def __init__(self, conn: Connection, ledger: PostgresLedger) -> None:
        self.conn = conn
        self.ledger = ledger

    def head(self) -> dict[str, Any]:
        return {str(k): v for k, v in self.conn.execute(
            "SELECT key, value FROM guardrails_meta").fetchall()}

    def set_head(self, values: dict[str, str]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO guardrails_meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", list(values.items()))
        if "served" in values and self.ledger.origin:
            # Delivered only if this transaction commits, and in commit order.
            self.conn.execute("SELECT pg_notify(%s, %s)", (self.ledger.origin, values["served"]))

    def insert_entry(self, index: int, hash_: str, data: str) -> None:
        self.conn.execute("INSERT INTO guardrails_entries (idx, hash, data) VALUES (%s, %s, %s)",
                          (index, hash_, data))
        self.ledger._local.attempt = (index, hash_)

    def get_pending(self, id_: str) -> PendingApproval | None:
        row = self.conn.execute("SELECT data FROM guardrails_pending WHERE id = %s",
                                (id_,)).fetchone()
        return None if row is None else PendingApproval.model_validate_json(row[0])

    def put_pending(self, pending: PendingApproval) -> None:
        self.conn.execute(
            "INSERT INTO guardrails_pending (id, status, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, data = EXCLUDED.data",
            (pending.id, pending.status, pending.model_dump_json()))


# ---------------------------------------------------------------------------
# The ledger


Follower = Callable[[str | None], None]
"""``callback(served_version)``, called by a ledger's watcher thread."""


def upgrade_schema(dsn: str, schema: str | None, timeout: float) -> tuple[int, int]:
    """``PostgresLedger.upgrade``: create or migrate the tables on one direct connection."""
    import psycopg

    _modules()
    _check_schema_name(schema)
    where = redact(dsn) + (f" (schema {schema})" if schema else "")
    try:
        conn = psycopg.connect(_conninfo(dsn, timeout), autocommit=True)
    except psycopg.Error as exc:
        raise _explain_connect(exc, where) from None
    try:
        _session_settings(conn, schema, timeout)
        return _prepare(conn, schema, where, migrate=True)
    finally:
        conn.close()


def _read_everything(conn: Any) -> tuple[list[Any], list[Any], dict[str, Any], DictNodeStore]:
    """Entries, states, head and tree nodes, each in one read of one snapshot."""
    rows = conn.execute("SELECT idx, hash, data FROM guardrails_entries ORDER BY idx").fetchall()
    states = conn.execute("SELECT version, data FROM guardrails_states").fetchall()
    head: dict[str, Any] = dict(conn.execute("SELECT key, value FROM guardrails_meta").fetchall())
    head["size"] = int(head["size"]) if head.get("size") else 0
    # All nodes in one read: checking them one query each would cost a round trip per node.
    nodes = DictNodeStore()
    nodes.put([(level, idx, bytes(hash_)) for level, idx, hash_ in conn.execute(
        f"SELECT level, idx, hash FROM {NODE_TABLE}").fetchall()])
    return rows, states, head, nodes


def _check_settings(timeout: float, poll_interval: float, pool_size: int, schema: str | None,
                    read_only: bool, signing_key: SigningKey | None) -> None:
    if read_only and signing_key is not None:
        raise ValueError("a ledger opened read-only cannot sign; drop signing_key")
    if not timeout > 0:
        raise ConfigError(f"timeout {timeout!r} must be a positive number of seconds")
    if not poll_interval > 0:
        raise ConfigError(f"poll_interval {poll_interval!r} must be a positive number of "
                          "seconds (it bounds how stale a replica can be)")
    if pool_size < 1:
        raise ConfigError(f"pool_size {pool_size!r} must be at least 1")
    _check_schema_name(schema)


def _pool(psycopg_pool: Any, conninfo: str, schema: str | None, timeout: float,
          read_only: bool, size: int) -> Any:
    """The ledger's connection pool, not yet opened."""
    return psycopg_pool.ConnectionPool(
        conninfo, kwargs={"autocommit": True}, min_size=1, max_size=size, open=False,
        configure=lambda c: _session_settings(c, schema, timeout, read_only),
        check=psycopg_pool.ConnectionPool.check_connection, timeout=timeout,
        name="guardrails-ledger")


class PostgresLedger(StoreLedger):
    """The ledger in a PostgreSQL database, shared by every replica that opens the same URL.

    Same protocol and guarantees as ``SQLiteLedger`` (entries, states,
    Merkle tree, signed checkpoints, pending approvals, ``verify``), across
    processes and hosts: writes are serialised by a row lock, so appends are
    totally ordered and ``promote`` is a compare-and-swap on the served
    version. ``subscribe`` lets replicas follow promotions (LISTEN/NOTIFY,
    polled every ``poll_interval`` seconds as the fallback).

    ``dsn``: ``postgresql://USER@HOST:PORT/DATABASE`` (any libpq URL or
    ``key=value`` string; keep the password in ``PGPASSWORD`` or
    ``~/.pgpass``). ``schema``: the PostgreSQL schema for the tables
    (created if missing); default: the first on the search path, normally
    ``public``. ``migrate``: create or upgrade the tables on open (under an
    advisory lock, so replicas may start together); with ``False`` a missing
    or older schema is an error that says to run ``guardrails db upgrade``.
    ``timeout``: seconds any connection, statement or lock may take before
    the operation fails. ``pool_size``: connections kept per ledger object.
    ``listen``: use LISTEN/NOTIFY (set ``False`` behind a pooler in
    transaction mode; replicas then rely on polling).

    Opening fails before anything is served, with ``ConfigError`` (cannot
    connect, no such database or user, bad URL, psycopg not installed) or
    ``LedgerIntegrityError`` (tables of the same names that guardrails did
    not create, a newer schema, a checkpoint that does not hold), each
    naming the problem and the fix. Once open, a lost connection surfaces
    as ``psycopg.OperationalError`` from the call that needed it; nothing is
    half-written, since every write is one transaction.
    """

    def __init__(self, dsn: str, *, schema: str | None = None, migrate: bool = True,
                 timeout: float = 10.0, poll_interval: float = 1.0, pool_size: int = 4,
                 listen: bool = True, signing_key: SigningKey | None = None,
                 verifier_key: VerifierKey | None = None,
                 trusted_checkpoint: str | None = None, read_only: bool = False) -> None:
        _, psycopg_pool = _modules()
        _check_settings(timeout, poll_interval, pool_size, schema, read_only, signing_key)
        self.dsn = dsn
        self.schema = schema
        self.timeout = float(timeout)
        self.poll_interval = float(poll_interval)
        self.listen = listen
        self._where = redact(dsn) + (f" (schema {schema})" if schema else "")
        self._conninfo = _conninfo(dsn, self.timeout)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._followers: list[Follower] = []
        self._watch_lock = threading.Lock()
        self._watcher: _Watcher | None = None
        self._closed = False
        self._pool_degraded = False
        self._read_only = read_only

        with self._connect() as conn:
            _, self.schema_version = _prepare(conn, schema, self._where,
                                              migrate and not read_only)
            if self.schema_version < SCHEMA_VERSION:
                raise ConfigError(
                    f"{self._where}: the ledger schema is at version {self.schema_version}, "
                    f"this library needs {SCHEMA_VERSION}; run `guardrails db upgrade` "
                    "(or open with migrate=True)")

        self._pool: ConnectionPool[Connection] = _pool(psycopg_pool, self._conninfo, schema,
                                                       self.timeout, read_only, pool_size)
        try:
            self._pool.open(wait=True, timeout=self.timeout)
            self._tree = MerkleTree(PostgresNodeStore(self._connection))
            if read_only:
                # No writer lock: a reader must not wait for, or block, the replicas' writes.
                with self._snapshot() as conn:
                    self._open_tree(_ReadOnlyTx(_PostgresTx(conn, self)), None, verifier_key,
                                    trusted_checkpoint)
            else:
                with self._transaction() as tx:
                    self._open_tree(tx, signing_key, verifier_key, trusted_checkpoint)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise _explain_connect(exc, self._where) from None
        except BaseException:
            self._pool.close()
            raise

    def _open_tree(self, tx: Any, signing_key: SigningKey | None,
                   verifier_key: VerifierKey | None, trusted_checkpoint: str | None) -> None:
        try:
            self._tree.reset(int(tx.head().get("size") or 0))
        except LedgerIntegrityError as exc:
            raise LedgerIntegrityError(f"{self._where}: {exc}", index=exc.index) from None
        self._open_checkpoints(tx, signing_key, verifier_key, trusted_checkpoint)

    @property
    def read_only(self) -> bool:
        """Whether this ledger was opened read-only (every write raises ``PermissionError``)."""
        return self._read_only

    def _refuse_if_read_only(self) -> None:
        if self._read_only:
            raise PermissionError(f"{self._where}: opened read-only; open it without read_only "
                                  "to write")

    # -- connections -------------------------------------------------------------

    def _new_connection(self) -> Connection:
        """A configured connection of its own (not pooled); psycopg's error if it cannot."""
        import psycopg

        conn = psycopg.connect(self._conninfo, autocommit=True)
        try:
            _session_settings(conn, self.schema, self.timeout, self._read_only)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _direct(self) -> Iterator[Connection]:
        with contextlib.closing(self._new_connection()) as conn:
            yield conn

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """``_direct``, with a failure to connect explained as a ``ConfigError`` (for opening)."""
        import psycopg

        try:
            conn = self._new_connection()
        except psycopg.Error as exc:
            raise _explain_connect(exc, self._where) from None
        with contextlib.closing(conn):
            yield conn

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Connection]:
        """A pooled connection, or a direct one when the pool has none to give.

        After an outage the pool reconnects in the background with a growing
        back-off. Until it gives a connection again, every call asks the
        server directly (waiting for the pool only briefly), so the first call
        after the server is back succeeds, whatever the pool's schedule.
        """
        import psycopg_pool

        wait = 0.02 if self._pool_degraded else min(self.timeout, 1.0)
        try:
            conn = self._pool.getconn(timeout=wait)
        except psycopg_pool.PoolTimeout:
            conn = None
        if conn is None:
            self._pool_degraded = True
            with self._direct() as direct:
                yield direct
            return
        self._pool_degraded = False
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """This thread's transaction connection if it is in one, else a pooled connection."""
        bound: Connection | None = getattr(self._local, "conn", None)
        if bound is not None:
            yield bound
            return
        with self._pooled() as conn:
            yield conn

    @contextlib.contextmanager
    def _bound(self, conn: Connection) -> Iterator[None]:
        self._local.conn = conn
        try:
            yield
        finally:
            self._local.conn = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_PostgresTx]:
        self._refuse_if_read_only()
        with self._lock:
            try:
                with self._pooled() as conn, conn.transaction():
                    self._lock_writer(conn)
                    with self._bound(conn):
                        yield _PostgresTx(conn, self)
            except BaseException:
                self._tree_stale = True
                raise

    def _lock_writer(self, conn: Connection) -> None:
        """Take the row lock that orders every write of every replica, waiting up to ``timeout``."""
        import psycopg

        try:
            conn.execute(_LOCK_WRITER)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            raise LedgerBusyError(
                f"{self._where}: another writer held the ledger's writer lock for more than "
                f"{self.timeout:g} s (a review, an approval or `guardrails db upgrade` in another "
                "process, or a stuck session); retry when it is done, find it in "
                "pg_stat_activity, or wait longer with [ledger] timeout") from None

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """One read-only, repeatable-read transaction: every read inside sees one moment."""
        bound: Connection | None = getattr(self._local, "conn", None)
        if bound is not None:
            yield bound
            return
        with self._pooled() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            with self._bound(conn):
                yield conn

    def _meta(self, key: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute("SELECT value FROM guardrails_meta WHERE key = %s",
                               (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- schema ------------------------------------------------------------------

    @classmethod
    def upgrade(cls, dsn: str, *, schema: str | None = None, timeout: float = 10.0
                ) -> tuple[int, int]:
        """Create or migrate the ledger's tables; returns ``(version before, version after)``.

        What ``guardrails db upgrade`` runs. Safe to run while replicas are
        serving, and from several hosts at once (an advisory lock
        serialises migrations). Raises like the constructor.
        """
        return upgrade_schema(dsn, schema, timeout)

    def close(self) -> None:
        """Stop the watcher thread and close every connection."""
        with self._watch_lock:
            self._closed = True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresLedger({self._where!r})"

    # -- reads -------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._meta("size") or 0)

    def entries(self, start: int = 0) -> Iterator[LedgerEntry]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT hash, data FROM guardrails_entries WHERE idx >= %s ORDER BY idx",
                (start,)).fetchall()
        for hash_, data in rows:
            yield _entry(hash_, data)

    def put_state(self, state: dict[str, Any]) -> str:
        self._refuse_if_read_only()
        data = canonical_json(state).decode("utf-8")
        version = state_version(state)
        with self._connection() as conn:
            conn.execute("INSERT INTO guardrails_states (version, data) VALUES (%s, %s) "
                         "ON CONFLICT (version) DO NOTHING", (version, data))
        return version

    def get_state(self, version: str) -> dict[str, Any]:
        import json

        with self._connection() as conn:
            row = conn.execute("SELECT data FROM guardrails_states WHERE version = %s",
                               (version,)).fetchone()
        if row is None:
            raise KeyError(f"no stored state {version[:12]} in {self._where}")
        return dict(json.loads(row[0]))

    def has_state(self, version: str) -> bool:
        with self._connection() as conn:
            return conn.execute("SELECT 1 FROM guardrails_states WHERE version = %s",
                                (version,)).fetchone() is not None

    def pending(self, *, include_resolved: bool = False) -> list[PendingApproval]:
        query = "SELECT data FROM guardrails_pending"
        if not include_resolved:
            query += " WHERE status = 'pending'"
        with self._connection() as conn:
            rows = conn.execute(query).fetchall()
        return [PendingApproval.model_validate_json(row[0]) for row in rows]

    def _read_view(self) -> contextlib.AbstractContextManager[Any]:
        return self._snapshot()

    def verify(self, blob_store: BlobStore | None = None) -> LedgerReport:
        """Check everything from one snapshot, so replicas writing meanwhile cannot disturb it.

        Reads the whole ledger (entries, states, tree nodes) without the
        statement timeout: verifying a long ledger may take a while.
        """
        import psycopg

        try:
            with self._snapshot() as conn:
                conn.execute("SET LOCAL statement_timeout = 0")
                conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                rows, states, head, nodes = _read_everything(conn)
                try:
                    tree = MerkleTree(nodes, head["size"])
                except LedgerIntegrityError as exc:
                    return LedgerReport(ok=False, size=head["size"],
                                        problem=f"{self._where}: {exc}", index=exc.index)
                report = verify_records(rows, states, head, blob_store, tree)
                problem = self._checkpoint_problem(tree) if report.ok else None
        except psycopg.Error as exc:
            return LedgerReport(ok=False, size=0,
                                problem=f"{self._where}: cannot read the ledger ({_first_line(exc)})")
        if not report.ok:
            return report.model_copy(update={"problem": f"{self._where}: {report.problem}"})
        if problem is not None:
            return LedgerReport(ok=False, size=report.size, problem=problem)
        return report

    # -- writes ------------------------------------------------------------------

    def promote(self, decision: Decision, expected_parent: str | None,
                proposal: dict[str, Any] | None = None, *,
                resolves: str | None = None) -> Decision | None:
        """``StoreLedger.promote``, and if the connection broke while committing, find out.

        A commit whose acknowledgement was lost may still have happened. The
        entry is then looked up by index and hash: if it is there, the
        promotion is returned as recorded; otherwise (or if the store cannot
        be asked) the error is raised and nothing is served from it.
        """
        import psycopg

        self._local.attempt = None
        try:
            return super().promote(decision, expected_parent, proposal, resolves=resolves)
        except psycopg.OperationalError:
            attempt = getattr(self._local, "attempt", None)
            if attempt is None or not self._committed(*attempt):
                raise
            index, hash_ = attempt
            log.warning("guardrails.commit_confirmed", store=self._where, entry=index,
                        reason="the connection broke while committing; the entry is stored")
            return decision.model_copy(update={"entry_index": index, "entry_hash": hash_})

    def _committed(self, index: int, hash_: str) -> bool:
        try:
            with self._pooled() as conn:
                row = conn.execute("SELECT hash FROM guardrails_entries WHERE idx = %s",
                                   (index,)).fetchone()
        except Exception:  # the store cannot be asked: the outcome stays unknown
            return False
        return row is not None and row[0] == hash_

    # -- following ---------------------------------------------------------------

    def subscribe(self, callback: Follower) -> Callable[[], None]:
        """Call ``callback(served_version)`` when a promotion may have changed the served version.

        Called from one watcher thread per ledger object (started by the
        first subscription): at once when a promotion's notification
        arrives, and every ``poll_interval`` seconds with the version read
        from the store, so a lost notification delays a replica by at most
        that long while the store is reachable. A callback must be quick or
        expect the next one to wait; its exceptions are logged. Returns a
        function that unsubscribes.
        """
        with self._watch_lock:
            if self._closed:
                raise ValueError(f"{self._where}: the ledger is closed")
            self._followers.append(callback)
            if self._watcher is None:
                self._watcher = _Watcher(self)
                self._watcher.start()

        def unsubscribe() -> None:
            with self._watch_lock, contextlib.suppress(ValueError):
                self._followers.remove(callback)

        return unsubscribe

    def _emit(self, served: str | None) -> None:
        with self._watch_lock:
            followers = list(self._followers)
        for callback in followers:
            try:
                callback(served)
            except Exception:
                log.exception("guardrails.follower_failed", store=self._where)


class _Watcher:
    """LISTEN for promotions on a connection of its own; poll as the fallback; reconnect."""

    def __init__(self, ledger: PostgresLedger) -> None:
        self.ledger = ledger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guardrails-ledger-watcher",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self.ledger.timeout + 2 * _TICK)

    def _run(self) -> None:
        ledger = self.ledger
        backoff = min(0.05, ledger.poll_interval)
        lost = False
        while not self._stop.is_set():
            try:
                with ledger._connect() as conn:
                    if lost:
                        log.info("guardrails.ledger_watch_restored", store=ledger._where)
                    backoff, lost = min(0.05, ledger.poll_interval), False
                    self._watch(conn)
            except Exception as exc:
                if not lost:
                    log.warning("guardrails.ledger_watch_lost", store=ledger._where,
                                error=_first_line(exc), retry_within=ledger.poll_interval)
                lost = True
            # Reconnect at once at first, then at most every poll_interval.
            self._stop.wait(backoff)
            backoff = min(backoff * 2, ledger.poll_interval)

    def _watch(self, conn: Connection) -> None:
        from psycopg import sql

        ledger = self.ledger
        if ledger.listen:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ledger.origin)))
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                # Polled right after LISTEN too: nothing committed meanwhile is missed.
                row = conn.execute("SELECT value FROM guardrails_meta WHERE key = 'served'"
                                   ).fetchone()
                ledger._emit(None if row is None else str(row[0]))
                next_poll = now + ledger.poll_interval
            wait = min(_TICK, max(0.0, next_poll - time.monotonic()))
            if ledger.listen:
                for notify in conn.notifies(timeout=wait, stop_after=1):
                    ledger._emit(notify.payload or None)
            else:
                self._stop.wait(wait)
