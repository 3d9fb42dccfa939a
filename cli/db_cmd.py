"""``fedft db``: create or upgrade the coordinator's database schema, and show its revision."""

from __future__ import annotations

import argparse

DB_HELP = (
    "database URL: sqlite:///PATH, a PATH ending in .db or .sqlite, or "
    "postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``db`` subcommand and its ``upgrade`` and ``current`` actions."""
    p = subparsers.add_parser(
        "db",
        help="create or upgrade the coordinator's database schema",
        description="Manage the schema of the coordinator's database. A coordinator creates the "
        "schema of an empty database itself, but refuses a database at an older schema "
        "revision: upgrade it explicitly with `fedft db upgrade`.",
    )
    actions = p.add_subparsers(
        dest="db_action", metavar="ACTION", required=True, help="what to do with the database"
    )
    upgrade = actions.add_parser(
        "upgrade",
        help="migrate the schema to the newest revision (or to --revision)",
        description="Migrate the database's schema, creating it in an empty database. The "
        "upgrade runs in one transaction, so an interrupted upgrade leaves the old schema.",
    )
    upgrade.add_argument("--db", required=True, metavar="URL", help=DB_HELP)
    upgrade.add_argument(
        "--revision",
        default="head",
        metavar="REV",
        help="target schema revision (default: head, the newest this fedft ships)",
    )
    upgrade.set_defaults(handler=run_upgrade)
    current = actions.add_parser(
        "current",
        help="show the database's schema revision and whether it is the newest",
        description="Print the database's schema revision and the newest revision this fedft "
        "ships.",
    )
    current.add_argument("--db", required=True, metavar="URL", help=DB_HELP)
    current.set_defaults(handler=run_current)


def run_upgrade(args: argparse.Namespace) -> int:
    """Upgrade the schema, then report the revision the database is at."""
    from fedft.server.state.migrate import current_revision, upgrade

    upgrade(args.db, args.revision)
    print(f"database schema at revision {current_revision(args.db) or 'none'}")
    return 0


def run_current(args: argparse.Namespace) -> int:
    """Print the schema revision, marking whether it is the head."""
    from fedft.server.state.migrate import current_revision, head_revision

    revision = current_revision(args.db)
    head = head_revision()
    if revision == head:
        print(f"{revision} (head)")
    else:
        shown = revision or "none (no fedft schema)"
        print(f"{shown}; head is {head}: run `fedft db upgrade --db URL`")
    return 0
