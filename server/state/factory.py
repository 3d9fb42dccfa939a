"""Open the state a ``--db`` URL names: in memory, SQLite or PostgreSQL, schema checked."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from fedft.core.errors import UsageError
from fedft.server.state.base import State
from fedft.server.state.engine import check_connection, display, make_engine, parse_url
from fedft.server.state.memory import InMemoryState
from fedft.server.state.migrate import head_revision, known_revisions, schema_state, upgrade_engine
from fedft.server.state.sql import SqlState


def open_state(url: str, *, create: bool = True) -> State:
    """Open the state at ``url``: ``memory``, a .db/.sqlite path, sqlite:/// or postgresql URL.

    An empty database gets the current schema when ``create`` is true; a database at an older
    schema revision is refused rather than migrated behind the operator's back.

    Raises:
        UsageError: the URL is unusable, the server unreachable, or the schema not current.
    """
    if url.strip().lower() == "memory":
        return InMemoryState()
    parsed = parse_url(url)
    database = parsed.database or ""
    if (
        not create
        and parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).is_file()
    ):
        # SQLite would create an empty file for a mistyped path (defect 11).
        raise UsageError(f"no database at {database} (check --db; `fedft db upgrade` creates one)")
    engine = make_engine(parsed)
    try:
        check_connection(engine)
        _ensure_schema(engine, create=create)
    except BaseException:
        engine.dispose()
        raise
    return SqlState(engine)


def _ensure_schema(engine: sa.Engine, *, create: bool) -> None:
    head = head_revision()
    has_tables, revision = schema_state(engine)
    if revision == head:
        return
    where = display(engine.url)
    hint = f"run `fedft db upgrade --db {where}`"
    if not has_tables:
        if not create:
            raise UsageError(f"database {where} has no fedft schema; {hint}")
        upgrade_engine(engine)
        return
    if revision is None:
        raise UsageError(
            f"database {where} has tables but no fedft schema revision; "
            f"use an empty database, or {hint} if it is an uninitialized fedft database"
        )
    if revision in known_revisions():
        raise UsageError(
            f"database {where} is at schema revision {revision}, this fedft needs {head}; {hint}"
        )
    raise UsageError(
        f"database {where} is at schema revision {revision!r}, which this fedft does not know "
        f"(it needs {head}); if the database is older, {hint}; if newer, upgrade fedft"
    )
