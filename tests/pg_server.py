"""A throwaway PostgreSQL server for the tests: started and stopped by ``.ci/postgres.sh``.

``.ci/run`` starts one with the same script and exports its DSN as
``GUARDRAILS_TEST_POSTGRES_DSN``; without that variable the session fixture
in conftest.py starts its own. Tests that stop or kill a server start their
own with ``PostgresServer.start()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "postgres.sh"
ENV_DSN = "GUARDRAILS_TEST_POSTGRES_DSN"


class ServerUnavailable(RuntimeError):
    """The script could not start a server (no PostgreSQL on this machine, say)."""


class PostgresServer:
    """One server in its own directory; ``stop`` and ``start`` again keep its data and port."""

    TEST_OPTIONS = "-c fsync=off"
    """A test server needs no durability against power loss; a crash of the server itself
    (``stop("immediate")``) still loses no committed transaction."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.dsn = ""

    @classmethod
    def start_new(cls) -> PostgresServer:
        # Under /tmp: the server runs as the `postgres` user, which must reach the directory.
        base = "/tmp" if Path("/tmp").is_dir() else None
        server = cls(Path(tempfile.mkdtemp(prefix="guardrails-pg-", dir=base)))
        try:
            server.start()
        except BaseException:
            shutil.rmtree(server.directory, ignore_errors=True)
            raise
        return server

    @property
    def port(self) -> int:
        return int((self.directory / "port").read_text())

    def start(self) -> str:
        env = {**os.environ, "PG_OPTIONS": os.environ.get("PG_OPTIONS", self.TEST_OPTIONS)}
        result = subprocess.run(["bash", str(SCRIPT), "start", str(self.directory)], env=env,
                                capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise ServerUnavailable(f"{SCRIPT.name} start failed ({result.returncode}): "
                                    f"{result.stderr.strip()[-2000:]}")
        self.dsn = result.stdout.strip().splitlines()[-1]
        return self.dsn

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: as if it crashed (recovery on start)."""
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory), mode],
                       capture_output=True, text=True, timeout=120, check=True)

    def cleanup(self) -> None:
        try:
            self.stop("immediate")  # its data is thrown away next
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    """A schema name no ledger uses yet; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield schema
    finally:
        drop_schema(dsn, schema)


def server_dsn() -> str | None:
    return os.environ.get(ENV_DSN) or None


@contextmanager
def connect(dsn: str, schema: str | None = None) -> Iterator[Any]:
    """A psycopg connection behind a ledger's back (autocommit), in ``schema`` if given."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        if schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield conn
