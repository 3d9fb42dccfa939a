"""SQL state on SQLAlchemy Core: one transaction per mutation, committed before it returns."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from fedft.server.state import schema as s
from fedft.server.state.base import (
    ClientExists,
    DuplicateUpdate,
    RoundClosed,
    State,
    StateError,
    TokenError,
)
from fedft.server.state.engine import make_engine, parse_url, writer
from fedft.server.state.records import (
    ROUND_DONE,
    ROUND_OPEN,
    ClientRecord,
    LedgerEntry,
    NewUpdate,
    RoundRecord,
    RunRecord,
    TaskRecord,
    TokenRecord,
    TrafficRecord,
    UpdateRecord,
)
from fedft.server.state.sql_updates import store_updates


def _fields(row: sa.Row[Any], record: type[Any]) -> dict[str, Any]:
    """The columns of ``row`` that are fields of ``record``."""
    return {k: v for k, v in row._mapping.items() if k in record.__dataclass_fields__}


def _client(row: sa.Row[Any]) -> ClientRecord:
    values = _fields(row, ClientRecord)
    values["public_key"] = bytes(values["public_key"])  # a memoryview on some drivers
    return ClientRecord(**values)


def _task(row: sa.Row[Any]) -> TaskRecord:
    values = _fields(row, TaskRecord)
    values["payload_shas"] = tuple(values["payload_shas"])  # stored as a JSON list
    return TaskRecord(**values)


def _first_line(exc: IntegrityError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)


class SqlState(State):
    """State in SQLite or PostgreSQL; open it through :func:`fedft.server.state.factory.open_state`.

    Mutations run in ``BEGIN IMMEDIATE`` transactions on SQLite (writers queue on the busy
    timeout) and in READ COMMITTED transactions on PostgreSQL, where the races that matter are
    closed by conditional updates, row locks and primary keys.
    """

    def __init__(self, engine: sa.Engine | str) -> None:
        self._engine = make_engine(parse_url(engine)) if isinstance(engine, str) else engine
        self._writer = writer(self._engine)

    def close(self) -> None:
        """Release connections."""
        self._engine.dispose()

    def _put(self, conn: sa.Connection, data: bytes, sha: str | None = None) -> str:
        sha = sha or hashlib.sha256(data).hexdigest()
        if conn.execute(sa.select(s.blobs.c.sha).where(s.blobs.c.sha == sha)).first() is None:
            # ON CONFLICT DO NOTHING, not a caught IntegrityError: on PostgreSQL an error aborts
            # the whole enclosing transaction, and a concurrent writer may insert the same blob.
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(s.blobs).values(sha=sha, data=bytes(data), size=len(data))
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["sha"]))
        return sha

    # --- run -----------------------------------------------------------------------------------
    def initialize_run(self, run: RunRecord, initial_checkpoint: bytes) -> RunRecord:
        """Store the run and its round-0 checkpoint unless a run exists; return the stored run."""
        try:
            with self._writer.begin() as conn:
                existing = self._get_run(conn)
                if existing is not None:
                    return existing
                conn.execute(s.run.insert().values(id=1, **vars(run)))
                sha = self._put(conn, initial_checkpoint)
                conn.execute(s.checkpoints.insert().values(round=0, sha=sha))
                stored = self._get_run(conn)
        except IntegrityError:
            # A concurrent initializer won the single-row key; its run is the run.
            stored = self.get_run()
        if stored is None:
            raise StateError("the run could not be stored")
        return stored

    @staticmethod
    def _get_run(conn: sa.Connection) -> RunRecord | None:
        row = conn.execute(sa.select(s.run)).first()
        return None if row is None else RunRecord(**_fields(row, RunRecord))

    def get_run(self) -> RunRecord | None:
        """Return the run, or None before :meth:`initialize_run`."""
        with self._engine.connect() as conn:
            return self._get_run(conn)

    # --- enrollment ----------------------------------------------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        """Store a new enrollment token (by hash)."""
        try:
            with self._writer.begin() as conn:
                conn.execute(s.tokens.insert().values(**vars(token)))
        except IntegrityError:
            raise StateError("an enrollment token with this hash exists already") from None

    def enroll(self, token_hash: str, client: ClientRecord, now: float) -> ClientRecord:
        """Consume a token and add the client atomically."""
        t = s.tokens.c
        try:
            with self._writer.begin() as conn:
                # Conditional consume: of two racing enrollments only one UPDATE matches the row.
                consumed = conn.execute(
                    s.tokens.update()
                    .where(t.token_hash == token_hash, t.used_at.is_(None))
                    .where(sa.or_(t.expires_at.is_(None), t.expires_at > now))
                    .values(used_at=now, used_by=client.client_id)
                )
                if consumed.rowcount != 1:
                    token = conn.execute(sa.select(s.tokens).where(t.token_hash == token_hash))
                    row = token.first()
                    if row is None:
                        raise TokenError("unknown enrollment token")
                    if row.used_at is not None:
                        raise TokenError("enrollment token already used")
                    raise TokenError("enrollment token expired")
                # A taken id raises here; leaving the block rolls the token back to unused.
                conn.execute(s.clients.insert().values(**vars(client)))
                row = conn.execute(
                    sa.select(s.clients).where(s.clients.c.client_id == client.client_id)
                ).one()
        except IntegrityError:
            raise ClientExists(f"client {client.client_id!r} is already enrolled") from None
        return _client(row)

    def list_tokens(self) -> list[TokenRecord]:
        """Return all tokens, oldest first."""
        query = sa.select(s.tokens).order_by(s.tokens.c.created_at, s.tokens.c.token_hash)
        with self._engine.connect() as conn:
            return [TokenRecord(**_fields(r, TokenRecord)) for r in conn.execute(query)]

    # --- clients -------------------------------------------------------------------------------
    def get_client(self, client_id: str) -> ClientRecord | None:
        """Return one client, or None."""
        query = sa.select(s.clients).where(s.clients.c.client_id == client_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _client(row)

    def list_clients(self) -> list[ClientRecord]:
        """Return all enrolled clients ordered by id."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(s.clients).order_by(s.clients.c.client_id)).all()
        return [_client(r) for r in rows]

    def touch_client(
        self,
        client_id: str,
        now: float,
        *,
        num_examples: int | None = None,
        properties: dict[str, object] | None = None,
    ) -> None:
        """Record that a client was seen, optionally with fresh example count and properties."""
        values: dict[str, Any] = {"last_seen": now}
        if num_examples is not None:
            values["num_examples"] = num_examples
        if properties is not None:
            values["properties"] = properties
        with self._writer.begin() as conn:
            stmt = s.clients.update().where(s.clients.c.client_id == client_id).values(**values)
            if conn.execute(stmt).rowcount != 1:
                raise StateError(f"unknown client {client_id!r}")

    # --- blobs ---------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        """Store bytes under their SHA-256 hex digest (idempotent); return the digest."""
        with self._writer.begin() as conn:
            return self._put(conn, data)

    def get_blob(self, sha: str) -> bytes:
        """Return a blob; raises KeyError if absent."""
        with self._engine.connect() as conn:
            data = conn.execute(sa.select(s.blobs.c.data).where(s.blobs.c.sha == sha)).scalar()
        if data is None:
            raise KeyError(sha)
        return bytes(data)

    # --- rounds and tasks ----------------------------------------------------------------------
    def open_round(
        self, round_: RoundRecord, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Start a round with its tasks and their payload blobs, atomically."""
        if round_.status != ROUND_OPEN:
            raise StateError(f"a new round must be {ROUND_OPEN!r}, not {round_.status!r}")
        for task in tasks:
            if task.round != round_.round:
                raise StateError(f"task {task.task_id!r} belongs to round {task.round}")
        try:
            with self._writer.begin() as conn:
                last = conn.execute(sa.select(sa.func.max(s.rounds.c.round))).scalar()
                expected = (last or 0) + 1
                if last is not None and round_.round <= last:
                    raise StateError(f"round {round_.round} exists already")
                if round_.round != expected:
                    raise StateError(f"round {round_.round} is not the next round ({expected})")
                conn.execute(s.rounds.insert().values(**vars(round_)))
                self._insert_tasks(conn, round_.round, tasks, blobs)
        except IntegrityError as exc:
            # Unknown client, missing payload blob, duplicate task id, or a racing open_round.
            raise StateError(f"cannot open round {round_.round}: {_first_line(exc)}") from None

    def add_tasks(
        self, round_number: int, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Add tasks to an open round, atomically."""
        for task in tasks:
            if task.round != round_number:
                raise StateError(f"task {task.task_id!r} belongs to round {task.round}")
        r = s.rounds.c
        status = sa.select(r.status).where(r.round == round_number).with_for_update()
        try:
            with self._writer.begin() as conn:
                if conn.execute(status).scalar() != ROUND_OPEN:
                    raise RoundClosed(f"round {round_number} is not open")
                self._insert_tasks(conn, round_number, tasks, blobs)
        except IntegrityError as exc:
            raise StateError(
                f"cannot add tasks to round {round_number}: {_first_line(exc)}"
            ) from None

    def _insert_tasks(
        self,
        conn: sa.Connection,
        round_number: int,
        tasks: Sequence[TaskRecord],
        blobs: Sequence[bytes],
    ) -> None:
        """Store ``blobs`` and insert ``tasks`` in the caller's transaction."""
        given = {self._put(conn, data) for data in blobs}
        # A JSON list cannot carry foreign keys, so check the blobs' presence here.
        needed = {sha for t in tasks for sha in t.payload_shas} - given
        if needed:
            present = (
                sa.select(sa.func.count()).select_from(s.blobs).where(s.blobs.c.sha.in_(needed))
            )
            if conn.execute(present).scalar_one() != len(needed):
                raise StateError(f"round {round_number}: a task's payload blob is missing")
        rows = [{**vars(t), "payload_shas": list(t.payload_shas)} for t in tasks]
        if rows:
            conn.execute(s.tasks.insert(), rows)

    def extend_deadline(self, round_number: int, deadline: float) -> None:
        """Move an open round's deadline (used after a coordinator restart)."""
        r = s.rounds.c
        stmt = s.rounds.update().where(r.round == round_number, r.status == ROUND_OPEN)
        with self._writer.begin() as conn:
            if conn.execute(stmt.values(deadline=deadline)).rowcount != 1:
                raise RoundClosed(f"round {round_number} is not open")

    def get_round(self, round_number: int) -> RoundRecord | None:
        """Return one round, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(s.rounds).where(s.rounds.c.round == round_number)).first()
        return None if row is None else RoundRecord(**_fields(row, RoundRecord))

    def list_rounds(self) -> list[RoundRecord]:
        """Return all rounds in order."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(s.rounds).order_by(s.rounds.c.round)).all()
        return [RoundRecord(**_fields(r, RoundRecord)) for r in rows]

    def get_task(self, task_id: str) -> TaskRecord | None:
        """Return one task, or None."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(s.tasks).where(s.tasks.c.task_id == task_id)).first()
        return None if row is None else _task(row)

    def tasks_for_round(self, round_number: int) -> list[TaskRecord]:
        """Return a round's tasks ordered by client id."""
        t = s.tasks.c
        query = sa.select(s.tasks).where(t.round == round_number).order_by(t.client_id, t.task_id)
        with self._engine.connect() as conn:
            return [_task(r) for r in conn.execute(query)]

    # --- updates -------------------------------------------------------------------------------
    def add_updates(self, items: Sequence[NewUpdate]) -> list[StateError | None]:
        """Store several updates (with their traffic records) in one transaction."""
        if not items:
            return []
        # Outside the transaction: hashing a large payload would hold the write lock.
        digests = [hashlib.sha256(item.data).hexdigest() for item in items]
        try:
            with self._writer.begin() as conn:
                return store_updates(conn, items, digests)
        except IntegrityError:
            # A racing writer got past the checks (the primary key caught it); on PostgreSQL
            # the error aborted the whole transaction: store each item alone, so that only the
            # offending one is refused.
            if len(items) == 1:
                task_id = items[0].update.task_id
                return [DuplicateUpdate(f"task {task_id!r} already has an update")]
            return [self.add_updates([item])[0] for item in items]

    def updates_for_round(self, round_number: int) -> list[UpdateRecord]:
        """Return a round's updates in the order they were accepted."""
        u = s.updates.c
        query = sa.select(s.updates).where(u.round == round_number).order_by(u.seq)
        with self._engine.connect() as conn:
            return [UpdateRecord(**_fields(r, UpdateRecord)) for r in conn.execute(query)]

    def close_round(
        self,
        round_number: int,
        now: float,
        metrics: dict[str, object],
        checkpoint: bytes,
        ledger: Sequence[LedgerEntry] = (),
    ) -> None:
        """Mark an open round done with its metrics, checkpoint and ledger entries, atomically."""
        r = s.rounds.c
        with self._writer.begin() as conn:
            done = conn.execute(
                s.rounds.update()
                .where(r.round == round_number, r.status == ROUND_OPEN)
                .values(status=ROUND_DONE, closed_at=now, metrics=metrics)
            )
            if done.rowcount != 1:
                raise RoundClosed(f"round {round_number} is not open")
            sha = self._put(conn, checkpoint)
            conn.execute(s.checkpoints.insert().values(round=round_number, sha=sha))
            for entry in ledger:
                conn.execute(s.privacy_ledger.insert().values(**vars(entry)))

    def latest_checkpoint(self) -> tuple[int, bytes]:
        """Return (round, checkpoint bytes) of the newest checkpoint (round 0 is the initial)."""
        c = s.checkpoints.c
        query = (
            sa.select(c.round, s.blobs.c.data)
            .join(s.blobs, s.blobs.c.sha == c.sha)
            .order_by(c.round.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise StateError("no checkpoint: the run is not initialized")
        return int(row.round), bytes(row.data)

    def get_checkpoint(self, round_number: int) -> bytes:
        """Return the checkpoint stored when a round closed (0: the initial one)."""
        c = s.checkpoints.c
        query = (
            sa.select(s.blobs.c.data)
            .join(s.checkpoints, s.blobs.c.sha == c.sha)
            .where(c.round == round_number)
        )
        with self._engine.connect() as conn:
            data = conn.execute(query).scalar()
        if data is None:
            raise KeyError(round_number)
        return bytes(data)

    # --- accounting ----------------------------------------------------------------------------
    def add_traffic(self, record: TrafficRecord) -> None:
        """Record the serialized bytes of one exchange."""
        with self._writer.begin() as conn:
            conn.execute(s.traffic.insert().values(**vars(record)))

    def list_traffic(self, round_number: int | None = None) -> list[TrafficRecord]:
        """Return traffic records (of one round if given) in insertion order."""
        query = sa.select(s.traffic).order_by(s.traffic.c.id)
        if round_number is not None:
            query = query.where(s.traffic.c.round == round_number)
        with self._engine.connect() as conn:
            return [TrafficRecord(**_fields(r, TrafficRecord)) for r in conn.execute(query)]

    def append_ledger(self, entry: LedgerEntry) -> None:
        """Append a privacy-ledger entry."""
        with self._writer.begin() as conn:
            conn.execute(s.privacy_ledger.insert().values(**vars(entry)))

    def ledger(self) -> list[LedgerEntry]:
        """Return the privacy ledger in round order."""
        p = s.privacy_ledger.c
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(s.privacy_ledger).order_by(p.round, p.id)).all()
        return [LedgerEntry(**_fields(r, LedgerEntry)) for r in rows]
