"""Storing a batch of updates in one SQL transaction, with a fixed number of statements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fedft.server.state import schema as s
from fedft.server.state.base import DuplicateUpdate, RoundClosed, StateError
from fedft.server.state.records import ROUND_OPEN, NewUpdate

# Statements built once: constructing a select costs more than running it on SQLite.
_ROUNDS = (
    sa.select(s.rounds.c.round, s.rounds.c.status)
    .where(s.rounds.c.round.in_(sa.bindparam("rounds", expanding=True)))
    .order_by(s.rounds.c.round)  # one lock order for every writer: no deadlock between batches
    .with_for_update()
)
_TASKS = sa.select(s.tasks.c.task_id, s.tasks.c.client_id, s.tasks.c.round).where(
    s.tasks.c.task_id.in_(sa.bindparam("ids", expanding=True))
)
_ANSWERED = sa.select(s.updates.c.task_id).where(
    s.updates.c.task_id.in_(sa.bindparam("ids", expanding=True))
)
_LAST_SEQ = (
    sa.select(s.updates.c.round, sa.func.max(s.updates.c.seq))
    .where(s.updates.c.round.in_(sa.bindparam("rounds", expanding=True)))
    .group_by(s.updates.c.round)
)


def store_updates(
    conn: sa.Connection, items: Sequence[NewUpdate], digests: Sequence[str]
) -> list[StateError | None]:
    """Check and insert ``items`` in the caller's transaction; return each one's refusal.

    ``digests`` are the SHA-256 hex digests of the items' data, computed by the caller before
    the transaction began (hashing a large payload inside it would hold the write lock).
    Nothing of a refused item is written. The caller commits.
    """
    ids = [item.update.task_id for item in items]
    numbers = sorted({item.update.round for item in items})
    # Lock the rounds' rows until commit (PostgreSQL; SQLite holds its write lock already):
    # close_round's UPDATE waits for us or we see it done, and the seq numbers below are ours.
    status = dict(conn.execute(_ROUNDS, {"rounds": numbers}).all())
    tasks = {row.task_id: row for row in conn.execute(_TASKS, {"ids": ids})}
    answered = set(conn.execute(_ANSWERED, {"ids": ids}).scalars())
    outcomes: list[StateError | None] = []
    accepted: list[tuple[NewUpdate, str]] = []
    for item, digest in zip(items, digests, strict=True):
        refusal = _refusal(item, digest, tasks.get(item.update.task_id), status, answered)
        outcomes.append(refusal)
        if refusal is None:
            answered.add(item.update.task_id)  # a second item for the task is a duplicate
            accepted.append((item, digest))
    if accepted:
        _insert(conn, accepted)
    return outcomes


def _refusal(
    item: NewUpdate, digest: str, task: Any, status: dict[int, str], answered: set[str]
) -> StateError | None:
    """The reason to refuse one item, checked in the order :meth:`State.add_update` documents."""
    update = item.update
    if task is None:
        return StateError(f"unknown task {update.task_id!r}")
    if task.client_id != update.client_id or task.round > update.round:
        return StateError(f"task {update.task_id!r} belongs to another client or a later round")
    if status.get(update.round) != ROUND_OPEN:
        return RoundClosed(f"round {update.round} is not open")
    if digest != update.payload_sha:
        return StateError(f"update for task {update.task_id!r}: payload_sha mismatch")
    if update.task_id in answered:
        return DuplicateUpdate(f"task {update.task_id!r} already has an update")
    return None


def _insert(conn: sa.Connection, accepted: Sequence[tuple[NewUpdate, str]]) -> None:
    """Insert the payload blobs, the updates (numbered after each round's last) and traffic."""
    blobs = {digest: item.data for item, digest in accepted}
    # ON CONFLICT DO NOTHING, not a caught IntegrityError: on PostgreSQL an error aborts the
    # whole transaction, and a blob may exist already (two clients sent identical bytes).
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(s.blobs).on_conflict_do_nothing(index_elements=["sha"]),
        [{"sha": sha, "data": bytes(data), "size": len(data)} for sha, data in blobs.items()],
    )
    numbers = sorted({item.update.round for item, _ in accepted})
    last = dict(conn.execute(_LAST_SEQ, {"rounds": numbers}).all())
    rows = []
    for item, _ in accepted:
        seq = last[item.update.round] = (last.get(item.update.round) or 0) + 1
        rows.append({**vars(item.update), "seq": seq})
    conn.execute(s.updates.insert(), rows)
    traffic = [vars(item.traffic) for item, _ in accepted if item.traffic is not None]
    if traffic:
        conn.execute(s.traffic.insert(), traffic)
