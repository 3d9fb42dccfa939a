"""Database URLs and engines for the SQL state: what fedft accepts, SQLite pragmas, pooling."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import ArgumentError, DBAPIError

from fedft.core.errors import UsageError

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
# Long enough to outlast any one write transaction of ours (they are short), so concurrent
# writers queue instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A server that does not answer should become a clear error, not a hang.
PG_CONNECT_TIMEOUT_S = 10
# Execution option that marks a write transaction, so SQLite takes its write lock at BEGIN.
WRITE_OPTION = "fedft_write"
EXPECTED = "expected 'memory', a .db/.sqlite file path, sqlite:///PATH or postgresql+psycopg://..."


def parse_url(url: str) -> sa.URL:
    """Turn a user's database URL (or .db file path) into a SQLAlchemy URL fedft supports.

    Raises:
        UsageError: the URL cannot be parsed or names a backend fedft does not support.
    """
    text = url.strip()
    if text.lower() == "memory":
        raise UsageError("the in-memory state has no database schema; give an SQL database URL")
    if "://" not in text:
        if text.lower().endswith(SQLITE_SUFFIXES):
            # Absolute, so that the engine and alembic (which may chdir) agree on the file.
            return sa.URL.create("sqlite", database=str(Path(text).expanduser().absolute()))
        raise UsageError(f"cannot parse database URL {text!r}: {EXPECTED}")
    try:
        parsed = sa.make_url(text)
    except ArgumentError:
        raise UsageError(f"cannot parse database URL {text!r}: {EXPECTED}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or "mode=memory" in str(parsed.query):
            # Each pooled connection would see its own empty database; nothing would persist.
            raise UsageError("an in-memory SQLite database is not durable; use --db memory")
        return parsed.set(drivername="sqlite")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise UsageError(f"unsupported database {parsed.drivername!r}: {EXPECTED}")


def display(url: sa.URL) -> str:
    """Render a URL for messages, without its password."""
    return url.render_as_string(hide_password=True)


def make_engine(url: sa.URL) -> sa.Engine:
    """Create an engine: SQLite in WAL mode with full fsync, PostgreSQL through psycopg 3."""
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def writer(engine: sa.Engine) -> sa.Engine:
    """Return a view of ``engine`` whose transactions are writes (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def check_connection(engine: sa.Engine) -> None:
    """Connect once, turning an unreachable server or unopenable file into a UsageError."""
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        folder = Path(url.database).parent
        if not folder.is_dir():
            raise UsageError(f"cannot open database {display(url)}: folder {folder} does not exist")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise UsageError(f"cannot connect to database {display(url)}: {reason}") from None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 module would issue BEGIN lazily and never BEGIN IMMEDIATE; we issue it ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # The timeout first, so that even switching to WAL waits for a concurrent writer.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers never block the writer; FULL: every commit is fsynced before it returns.
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    # Switching a new file to WAL needs an exclusive lock for which SQLite does not call the busy
    # handler, so processes opening a fresh database together get "locked": retry until the
    # busy timeout. The mode is persistent, so later connections find WAL and skip the switch.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _sqlite_on_begin(conn: sa.Connection) -> None:
    # A deferred transaction that reads and then writes can fail with SQLITE_BUSY without waiting
    # (its snapshot is stale); taking the write lock at BEGIN makes writers queue on the timeout.
    immediate = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
