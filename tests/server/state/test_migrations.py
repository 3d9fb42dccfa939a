"""Migrations reproduce the schema module exactly; outdated or unusable databases are refused."""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from fedft.cli.main import build_parser, main
from fedft.core.errors import UsageError
from fedft.server.state import migrate
from fedft.server.state.engine import make_engine, parse_url
from fedft.server.state.factory import open_state
from fedft.server.state.memory import InMemoryState
from fedft.server.state.migrate import current_revision, head_revision, upgrade
from fedft.server.state.schema import metadata
from fedft.server.state.sql import SqlState


def engine_for(url: str) -> sa.Engine:
    return make_engine(parse_url(url))


def run_sql(url: str, *statements: str) -> None:
    engine = engine_for(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def differences(url: str) -> list[object]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_migrations_ship_with_the_package() -> None:
    assert (migrate.MIGRATIONS / "env.py").is_file()
    assert (migrate.MIGRATIONS / "script.py.mako").is_file()
    assert head_revision() == "2026_12_06_ledger_sensitivity"


def test_upgrade_creates_exactly_the_schema(sql_url: str) -> None:
    assert current_revision(sql_url) is None
    upgrade(sql_url)
    assert current_revision(sql_url) == head_revision()
    engine = engine_for(sql_url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(metadata.tables) | {migrate.VERSION_TABLE}
    assert differences(sql_url) == []
    upgrade(sql_url)  # at head already: nothing to do
    # The comparison does see a drift when there is one.
    run_sql(sql_url, "DROP INDEX ix_traffic_round")
    assert differences(sql_url) != []


def test_ticket_revision_keeps_a_synchronous_runs_tasks(sql_url: str) -> None:
    upgrade(sql_url, "2026_11_23_initial")
    engine = engine_for(sql_url)
    try:
        with engine.begin() as conn:  # a bound key: bytea on PostgreSQL, BLOB on SQLite
            conn.execute(
                sa.text("INSERT INTO clients VALUES ('c1', :key, 0, 0, 0, '{}')"), {"key": b"k"}
            )
            conn.execute(sa.text("INSERT INTO rounds VALUES (1, 'open', 0, 9, NULL, '{}')"))
            conn.execute(sa.text("INSERT INTO tasks VALUES ('t1', 1, 'c1', '[]', 0)"))
    finally:
        engine.dispose()
    upgrade(sql_url)
    assert differences(sql_url) == []
    state = open_state(sql_url, create=False)
    try:
        task = state.get_task("t1")
        assert task is not None
        assert task.ticket is None
        assert task.round == 1
    finally:
        state.close()


def test_ledger_revision_reads_older_entries_as_plain(sql_url: str) -> None:
    upgrade(sql_url, "2026_12_05_task_ticket")
    run_sql(
        sql_url,
        "INSERT INTO privacy_ledger (round, mechanism, noise_multiplier, clip_norm, "
        "sampling_rate, participants, adjacency, recorded_at) "
        "VALUES (1, 'gaussian', 1.0, 0.5, 0.1, 3, 'add-remove', 0)",
    )
    upgrade(sql_url)
    assert differences(sql_url) == []
    state = open_state(sql_url, create=False)
    try:
        (entry,) = state.ledger()
        assert entry.aggregation == "plain"
        assert entry.participants == 3
        assert (entry.l2_sensitivity, entry.l1_sensitivity) == (0.0, 0.0)
    finally:
        state.close()


def test_downgrade_removes_every_table(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = engine_for(sqlite_url)
    try:
        with engine.begin() as conn:
            cfg = migrate._config(engine.url)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == [migrate.VERSION_TABLE]
    finally:
        engine.dispose()
    assert current_revision(sqlite_url) is None


def test_open_state_creates_then_reopens(sql_url: str) -> None:
    with pytest.raises(UsageError, match="fedft db upgrade"):
        open_state(sql_url, create=False)
    first = open_state(sql_url)
    assert isinstance(first, SqlState)
    first.close()
    second = open_state(sql_url, create=False)
    assert second.get_run() is None
    second.close()


def test_concurrent_first_opens_create_the_schema_once(sql_url: str) -> None:
    barrier = threading.Barrier(6)
    errors: list[Exception] = []

    def open_one() -> None:
        barrier.wait()
        try:
            open_state(sql_url).close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert current_revision(sql_url) == head_revision()


@pytest.mark.parametrize(
    "stamp",
    [
        "DELETE FROM alembic_version",  # at base: the table exists, the revision does not
        "UPDATE alembic_version SET version_num = '2026_01_01_older'",
    ],
)
def test_open_state_refuses_an_outdated_schema(sql_url: str, stamp: str) -> None:
    upgrade(sql_url)
    run_sql(sql_url, stamp)
    with pytest.raises(UsageError, match="fedft db upgrade --db"):
        open_state(sql_url)


def test_open_state_refuses_a_foreign_database(sqlite_url: str) -> None:
    run_sql(sqlite_url, "CREATE TABLE something_else (x INTEGER)")
    with pytest.raises(UsageError, match="no fedft schema revision"):
        open_state(sqlite_url)


def test_plain_paths_and_memory(tmp_path: Path) -> None:
    assert isinstance(open_state("memory"), InMemoryState)
    for name in ("a.db", "b.sqlite", "c.sqlite3"):
        state = open_state(str(tmp_path / name))
        state.put_blob(b"x")
        state.close()
        assert (tmp_path / name).is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "cannot parse database URL"),
        ("mysql://u@h/db", "unsupported database"),
        ("postgresql+psycopg2://u@h/db", "unsupported database"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("sqlite:////no/such/folder/state.db", "does not exist"),
        ("/no/such/folder/state.db", "does not exist"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/db", "cannot connect to database"),
    ],
)
def test_unusable_urls_are_usage_errors(url: str, message: str) -> None:
    start = time.monotonic()
    with pytest.raises(UsageError, match=message):
        open_state(url)
    with pytest.raises(UsageError, match=message):
        upgrade(url)
    assert time.monotonic() - start < 10


def test_current_does_not_create_a_missing_sqlite_file(tmp_path: Path) -> None:
    target = tmp_path / "typo.db"
    assert main(["db", "current", "--db", str(target)]) == 0
    assert not target.exists()


def test_memory_has_no_schema_to_migrate() -> None:
    with pytest.raises(UsageError, match="in-memory state"):
        upgrade("memory")


# --- the `fedft db` command ------------------------------------------------------------------
def test_db_upgrade_and_current(sql_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "current", "--db", sql_url]) == 0
    assert "none" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", sql_url]) == 0
    assert head_revision() in capsys.readouterr().out
    assert main(["db", "current", "--db", sql_url]) == 0
    assert capsys.readouterr().out.strip() == f"{head_revision()} (head)"
    run_sql(sql_url, "DELETE FROM alembic_version")
    assert main(["db", "current", "--db", sql_url]) == 0
    assert "fedft db upgrade" in capsys.readouterr().out
    # Tables without a revision stamp: the upgrade fails cleanly and changes nothing.
    assert main(["db", "upgrade", "--db", sql_url, "--revision", "head"]) == 2
    assert "rolled back" in capsys.readouterr().err
    assert differences(sql_url) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["db", "upgrade", "--db", "mysql://u@h/db"],
        ["db", "current", "--db", "not a url"],
        ["db", "upgrade", "--db", "DB", "--revision", "no_such_revision"],
    ],
)
def test_db_errors_are_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / "x.db") if a == "DB" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedft: error: ")
    assert err.count("\n") == 1, err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_db_flag_is_explained() -> None:
    db = _subparsers(build_parser())["db"]
    parsers = [db, *_subparsers(db).values()]
    assert len(parsers) == 3
    for parser in parsers:
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.option_strings or action.dest} has no help"
