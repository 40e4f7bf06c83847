"""Blobs in PostgreSQL, beside the ledger: a two-host deployment needs one server.

A blob is a row of ``guardrails_blobs`` (digest, size, when stored) and its
bytes are rows of ``guardrails_blob_chunks`` (digest, sequence number, at
most ``chunk_size`` bytes each). Chunked rows rather than large objects: they
are dropped with their blob (``ON DELETE CASCADE``), copied by ``pg_dump``
without ``--blobs``, and need no ``lo_unlink`` housekeeping.

*Streamed.* ``put_stream`` spools the source to a temporary file while
hashing it, then sends it with binary ``COPY`` chunk by chunk; ``read_into``
reads the chunks through a server-side cursor a few at a time. Neither holds
a whole blob in memory (``put`` and ``get`` do, by their signature).

*Write-once.* The blob row and all its chunks are written in one
transaction that first inserts the row with ``ON CONFLICT DO NOTHING``: a
second writer of the same digest waits on the first and then writes
nothing, and no reader ever sees a blob row without all its chunks.

psycopg is imported when a store is opened, never by ``import guardrails``.
"""

from __future__ import annotations

import contextlib
import math
import urllib.parse
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

from .._errors import ConfigError
from ._blobs import CHUNK_SIZE, BlobInfo, BlobStoreUnavailable, HashingSink, Spool, digest_hex, verified

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

BLOB_TABLE = "guardrails_blobs"
CHUNK_TABLE = "guardrails_blob_chunks"
_LOCK_KEY = 0x6775617264626C62  # "guardblb": serialises table creation across hosts


def _modules() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL blob store needs psycopg 3 and psycopg-pool ({exc}); install them "
            "with: pip install 'guardrails-middleware[postgres]'") from None
    return psycopg, psycopg_pool


def redact_url(url: str) -> str:
    """``url`` without its password or query: fit for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host + (
        f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _reopen(url: str, options: dict[str, Any]) -> PostgresBlobStore:
    return PostgresBlobStore(url, **options)


class PostgresBlobStore:
    """A ``StreamingBlobStore`` in a PostgreSQL database (``postgresql://`` URL).

    ``schema``: where its two tables live (default: the search path's first,
    as for the ledger). ``timeout``: seconds to connect and, per statement,
    to wait on a lock; a statement moving a chunk may take ``statement_timeout``.
    Tables are created on first use. Every failure to reach the server raises
    ``BlobStoreUnavailable`` naming the store (its URL without the password).
    """

    def __init__(self, url: str, *, schema: str | None = None, chunk_size: int = CHUNK_SIZE,
                 timeout: float = 10.0, statement_timeout: float = 300.0, pool_size: int = 4,
                 read_only: bool = False) -> None:
        if chunk_size < 1024:
            raise ConfigError(f"chunk_size {chunk_size} is too small; use at least 1024 bytes")
        self._url = url
        self._options = {"schema": schema, "chunk_size": chunk_size, "timeout": timeout,
                         "statement_timeout": statement_timeout, "pool_size": pool_size,
                         "read_only": read_only}
        self.read_only = read_only
        """Creates no table and writes nothing (read-only transactions): for readers such as
        ``guardrails blobs verify``; a store never created reads as unavailable."""
        self.schema = schema
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.statement_timeout = statement_timeout
        self.pool_size = pool_size
        self._pool: ConnectionPool[Any] | None = None
        self.name = "PostgreSQL blob store " + redact_url(url) + (
            f" (schema {schema})" if schema else "")

    @property
    def url(self) -> str:
        return self._url

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._url, self._options))

    def __repr__(self) -> str:
        return f"PostgresBlobStore({redact_url(self._url)!r})"

    # -- connecting ---------------------------------------------------------------------------

    def _table(self, name: str) -> Any:
        from psycopg import sql

        if self.schema is None:
            return sql.Identifier(name)
        return sql.Identifier(self.schema, name)

    def _open_pool(self) -> ConnectionPool[Any]:
        psycopg, psycopg_pool = _modules()
        try:
            conninfo = psycopg.conninfo.make_conninfo(
                self._url, connect_timeout=max(2, math.ceil(self.timeout)),
                application_name="guardrails-blobs")
        except psycopg.Error as exc:
            raise ConfigError(f"{redact_url(self._url)!r} is not a PostgreSQL connection URL "
                              f"({exc}); write it as postgresql://USER@HOST:PORT/DATABASE") from None
        statement_ms, lock_ms = int(self.statement_timeout * 1000), int(self.timeout * 1000)

        def configure(conn: Any) -> None:
            conn.execute(f"SET statement_timeout = {statement_ms}")
            conn.execute(f"SET lock_timeout = {max(lock_ms, statement_ms)}")
            if self.read_only:
                conn.execute("SET default_transaction_read_only = on")

        pool: ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            conninfo, kwargs={"autocommit": True}, min_size=0, max_size=self.pool_size,
            open=False, configure=configure, timeout=self.timeout, name="guardrails-blobs")
        pool.open(wait=False)
        if self.read_only:
            return pool
        try:
            with pool.connection() as conn, conn.transaction():
                self._create_tables(conn)
        except BaseException:
            pool.close()
            raise
        return pool

    def _create_tables(self, conn: Any) -> None:
        from psycopg import sql

        # Two hosts starting at once must not both try to create the tables.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if self.schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.schema)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (digest TEXT PRIMARY KEY, size BIGINT NOT NULL, "
            "created TIMESTAMPTZ NOT NULL DEFAULT now())").format(self._table(BLOB_TABLE)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (digest TEXT NOT NULL REFERENCES {} ON DELETE CASCADE, "
            "seq INTEGER NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (digest, seq))").format(
                self._table(CHUNK_TABLE), self._table(BLOB_TABLE)))

    @contextlib.contextmanager
    def _connection(self, digest: str | None, action: str) -> Iterator[Any]:
        """A pooled connection; any failure to reach the server or run a statement becomes
        ``BlobStoreUnavailable`` naming the blob, the store and the action."""
        psycopg, psycopg_pool = _modules()
        try:
            if self._pool is None:
                self._pool = self._open_pool()
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            what = f"blob {digest}" if digest else "the blob list"
            raise BlobStoreUnavailable(
                f"{action} {what} failed: the {self.name} could not be used ({first}); check "
                "that the server is up and the URL, schema and credentials are right",
                digest=digest, store=self.name) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- the store ----------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        import io

        return self.put_stream(io.BytesIO(data))

    def put_stream(self, source: IO[bytes]) -> str:
        from psycopg import sql

        with Spool(source) as spool:
            digest = spool.digest
            with self._connection(digest, "storing") as conn, conn.transaction():
                inserted = conn.execute(sql.SQL(
                    "INSERT INTO {} (digest, size) VALUES (%s, %s) ON CONFLICT DO NOTHING").format(
                        self._table(BLOB_TABLE)), (digest, spool.size)).rowcount
                if not inserted:
                    return digest  # write-once: the first writer's bytes stay
                self._copy_chunks(conn, digest, spool.file)
        return digest

    def _copy_chunks(self, conn: Any, digest: str, file: IO[bytes]) -> None:
        from psycopg import sql

        statement = sql.SQL("COPY {} (digest, seq, data) FROM STDIN (FORMAT BINARY)").format(
            self._table(CHUNK_TABLE))
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(["text", "int4", "bytea"])
            seq = 0
            while chunk := file.read(self.chunk_size):
                copy.write_row((digest, seq, chunk))
                seq += 1

    def get(self, digest: str) -> bytes:
        import io

        buffer = io.BytesIO()
        self._stream(digest, buffer)
        return verified(self.name, digest, buffer.getvalue())

    def read_into(self, digest: str, sink: IO[bytes]) -> int:
        hashing = HashingSink(sink)
        self._stream(digest, hashing)
        return hashing.check(self.name, digest)

    def _stream(self, digest: str, sink: Any) -> None:
        from psycopg import sql

        digest_hex(digest)
        with self._connection(digest, "reading") as conn, conn.transaction():
            found = conn.execute(sql.SQL("SELECT size FROM {} WHERE digest = %s").format(
                self._table(BLOB_TABLE)), (digest,)).fetchone()
            if found is None:
                raise KeyError(digest)
            # A server-side cursor: a few chunks in memory at a time, however large the blob.
            with conn.cursor(name="guardrails_blob_read") as cur:
                cur.itersize = 4
                cur.execute(sql.SQL("SELECT data FROM {} WHERE digest = %s ORDER BY seq").format(
                    self._table(CHUNK_TABLE)), (digest,))
                for (chunk,) in cur:
                    sink.write(bytes(chunk))

    def blobs(self) -> Iterator[BlobInfo]:
        from psycopg import sql

        with self._connection(None, "listing") as conn:
            rows = conn.execute(sql.SQL(
                "SELECT digest, size, extract(epoch FROM created) FROM {} ORDER BY digest").format(
                    self._table(BLOB_TABLE))).fetchall()
        for digest, size, created in rows:
            yield BlobInfo(digest=digest, size=int(size), created=float(created))

    def delete(self, digest: str) -> None:
        from psycopg import sql

        with self._connection(digest, "deleting") as conn:
            conn.execute(sql.SQL("DELETE FROM {} WHERE digest = %s").format(
                self._table(BLOB_TABLE)), (digest,))

    def __contains__(self, digest: object) -> bool:
        from psycopg import sql

        if not isinstance(digest, str):
            return False
        try:
            digest_hex(digest)
        except KeyError:
            return False
        with self._connection(digest, "looking up") as conn:
            return conn.execute(sql.SQL("SELECT 1 FROM {} WHERE digest = %s").format(
                self._table(BLOB_TABLE)), (digest,)).fetchone() is not None
