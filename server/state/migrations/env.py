"""Alembic environment: migrate the schema on a connection handed in, or on the configured URL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from fedft.server.state.engine import make_engine, parse_url
from fedft.server.state.schema import metadata

config = context.config


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables in later migrations.
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run_offline() -> None:
    """Emit the migration as SQL text for the configured URL (``alembic upgrade --sql``)."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run on ``config.attributes["connection"]`` if given, otherwise connect to the URL."""
    connection = config.attributes.get("connection")
    if isinstance(connection, sa.Connection):
        # The caller owns the connection and its transaction (fedft.server.state.migrate).
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(parse_url(config.get_main_option("sqlalchemy.url") or ""))
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
