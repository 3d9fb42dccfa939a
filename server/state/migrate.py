"""Schema migrations as plain functions: upgrade a database, read its revision, know the head."""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from fedft.core.errors import UsageError
from fedft.server.state.engine import check_connection, make_engine, parse_url, writer

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
# Serializes concurrent upgrades of one PostgreSQL database (two coordinators starting at once).
PG_LOCK_KEY = 0x6665_6466_7464_62  # "fedftdb"
# Alembic's commands run through a module-global context, so threads must take turns.
_ALEMBIC_LOCK = threading.Lock()


def _config(url: sa.URL | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # Config values go through configparser interpolation, where a literal % must be doubled.
        text = url.render_as_string(hide_password=False).replace("%", "%%")
        cfg.set_main_option("sqlalchemy.url", text)
    return cfg


def head_revision() -> str:
    """Return the newest revision this fedft ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS}")
    return head


def known_revisions() -> set[str]:
    """Return every revision this fedft ships."""
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def upgrade_engine(engine: sa.Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` in one transaction."""
    try:
        with _ALEMBIC_LOCK, writer(engine).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            cfg = _config(engine.url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except CommandError as exc:
        raise UsageError(f"cannot upgrade to revision {revision!r}: {exc}") from None
    except sa.exc.DBAPIError as exc:
        # E.g. tables that exist without a revision stamp; the transaction left nothing behind.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise UsageError(f"upgrade to {revision!r} failed and was rolled back: {reason}") from None


def schema_state(engine: sa.Engine) -> tuple[bool, str | None]:
    """Return (whether the database has any table, its alembic revision or None)."""
    with engine.connect() as conn:
        has_tables = bool(sa.inspect(conn).get_table_names())
        revision = MigrationContext.configure(conn).get_current_revision()
    return has_tables, revision


def _with_engine(url: str) -> sa.Engine:
    engine = make_engine(parse_url(url))
    try:
        check_connection(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (creating the schema on an empty one).

    Raises:
        UsageError: the URL is unusable, the server unreachable, or the revision unknown.
    """
    engine = _with_engine(url)
    try:
        upgrade_engine(engine, revision)
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """Return the database's schema revision, or None for a database fedft never migrated.

    Raises:
        UsageError: the URL is unusable or the server unreachable.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        # Connecting would create an empty file: a typo in the path must not leave one behind.
        return None
    engine = _with_engine(url)
    try:
        return schema_state(engine)[1]
    finally:
        engine.dispose()
