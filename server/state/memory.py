"""In-memory state for tests and throwaway runs: dicts behind one re-entrant lock."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fedft.server.state.base import (
    ClientExists,
    DuplicateUpdate,
    RoundClosed,
    State,
    StateError,
    TokenError,
)
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


def _json(value: dict[str, Any]) -> dict[str, Any]:
    """Deep-copy through JSON, exactly what the SQL backend's JSON columns store and return."""
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


class InMemoryState(State):
    """State held in dicts; safe to call from many threads, gone when the process ends."""

    def __init__(self) -> None:
        # Re-entrant so that one public method may call another while holding the lock.
        self._lock = threading.RLock()
        self._run: RunRecord | None = None
        self._tokens: dict[str, TokenRecord] = {}
        self._clients: dict[str, ClientRecord] = {}
        self._blobs: dict[str, bytes] = {}
        self._rounds: dict[int, RoundRecord] = {}
        self._tasks: dict[str, TaskRecord] = {}
        self._updates: dict[str, UpdateRecord] = {}  # insertion order is acceptance order
        self._checkpoints: dict[int, str] = {}
        self._traffic: list[TrafficRecord] = []
        self._ledger: list[LedgerEntry] = []

    # --- run -----------------------------------------------------------------------------------
    def initialize_run(self, run: RunRecord, initial_checkpoint: bytes) -> RunRecord:
        """Store the run and its round-0 checkpoint unless a run exists; return the stored run."""
        with self._lock:
            if self._run is None:
                stored = replace(run, config=_json(run.config))
                self._checkpoints[0] = self._put(initial_checkpoint)
                self._run = stored
            return replace(self._run, config=_json(self._run.config))

    def get_run(self) -> RunRecord | None:
        """Return the run, or None before :meth:`initialize_run`."""
        with self._lock:
            return None if self._run is None else replace(self._run, config=_json(self._run.config))

    # --- enrollment ----------------------------------------------------------------------------
    def add_token(self, token: TokenRecord) -> None:
        """Store a new enrollment token (by hash)."""
        with self._lock:
            if token.token_hash in self._tokens:
                raise StateError("an enrollment token with this hash exists already")
            self._tokens[token.token_hash] = token

    def enroll(self, token_hash: str, client: ClientRecord, now: float) -> ClientRecord:
        """Consume a token and add the client atomically."""
        with self._lock:
            token = self._tokens.get(token_hash)
            if token is None:
                raise TokenError("unknown enrollment token")
            if token.used_at is not None:
                raise TokenError("enrollment token already used")
            if token.expires_at is not None and token.expires_at <= now:
                raise TokenError("enrollment token expired")
            if client.client_id in self._clients:
                raise ClientExists(f"client {client.client_id!r} is already enrolled")
            self._tokens[token_hash] = replace(token, used_at=now, used_by=client.client_id)
            stored = replace(client, properties=_json(client.properties))
            self._clients[client.client_id] = stored
            return replace(stored, properties=_json(stored.properties))

    def list_tokens(self) -> list[TokenRecord]:
        """Return all tokens, oldest first."""
        with self._lock:
            return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.token_hash))

    # --- clients -------------------------------------------------------------------------------
    def get_client(self, client_id: str) -> ClientRecord | None:
        """Return one client, or None."""
        with self._lock:
            client = self._clients.get(client_id)
            return None if client is None else replace(client, properties=_json(client.properties))

    def list_clients(self) -> list[ClientRecord]:
        """Return all enrolled clients ordered by id."""
        with self._lock:
            return [
                replace(c, properties=_json(c.properties)) for _, c in sorted(self._clients.items())
            ]

    def touch_client(
        self,
        client_id: str,
        now: float,
        *,
        num_examples: int | None = None,
        properties: dict[str, object] | None = None,
    ) -> None:
        """Record that a client was seen, optionally with fresh example count and properties."""
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                raise StateError(f"unknown client {client_id!r}")
            client = replace(client, last_seen=now)
            if num_examples is not None:
                client = replace(client, num_examples=num_examples)
            if properties is not None:
                client = replace(client, properties=_json(properties))
            self._clients[client_id] = client

    # --- blobs ---------------------------------------------------------------------------------
    def _put(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(sha, bytes(data))
        return sha

    def put_blob(self, data: bytes) -> str:
        """Store bytes under their SHA-256 hex digest (idempotent); return the digest."""
        with self._lock:
            return self._put(data)

    def get_blob(self, sha: str) -> bytes:
        """Return a blob; raises KeyError if absent."""
        with self._lock:
            return self._blobs[sha]

    # --- rounds and tasks ----------------------------------------------------------------------
    def open_round(
        self, round_: RoundRecord, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Start a round with its tasks and their payload blobs, atomically."""
        with self._lock:
            expected = max(self._rounds, default=0) + 1
            if round_.round in self._rounds:
                raise StateError(f"round {round_.round} exists already")
            if round_.round != expected:
                raise StateError(f"round {round_.round} is not the next round ({expected})")
            if round_.status != ROUND_OPEN:
                raise StateError(f"a new round must be {ROUND_OPEN!r}, not {round_.status!r}")
            self._store_tasks(round_.round, tasks, blobs)
            self._rounds[round_.round] = replace(round_, metrics=_json(round_.metrics))

    def add_tasks(
        self, round_number: int, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Add tasks to an open round, atomically."""
        with self._lock:
            self._open(round_number)
            self._store_tasks(round_number, tasks, blobs)

    def _store_tasks(
        self, round_number: int, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Validate every task of ``round_number``, then store them and their blobs (lock held)."""
        shas = {hashlib.sha256(b).hexdigest(): b for b in blobs}
        ids = [t.task_id for t in tasks]
        # Validate everything before writing anything: the method is all or nothing.
        if len(set(ids)) != len(ids) or any(i in self._tasks for i in ids):
            raise StateError(f"round {round_number}: duplicate task id")
        for task in tasks:
            if task.round != round_number:
                raise StateError(f"task {task.task_id!r} belongs to round {task.round}")
            if task.client_id not in self._clients:
                raise StateError(f"task {task.task_id!r}: unknown client {task.client_id!r}")
            if any(s not in shas and s not in self._blobs for s in task.payload_shas):
                raise StateError(f"task {task.task_id!r}: a payload blob is missing")
        for data in shas.values():
            self._put(data)
        for task in tasks:
            self._tasks[task.task_id] = replace(task, payload_shas=tuple(task.payload_shas))

    def extend_deadline(self, round_number: int, deadline: float) -> None:
        """Move an open round's deadline (used after a coordinator restart)."""
        with self._lock:
            self._rounds[round_number] = replace(self._open(round_number), deadline=deadline)

    def _open(self, round_number: int) -> RoundRecord:
        round_ = self._rounds.get(round_number)
        if round_ is None or round_.status != ROUND_OPEN:
            raise RoundClosed(f"round {round_number} is not open")
        return round_

    def get_round(self, round_number: int) -> RoundRecord | None:
        """Return one round, or None."""
        with self._lock:
            round_ = self._rounds.get(round_number)
            return None if round_ is None else replace(round_, metrics=_json(round_.metrics))

    def list_rounds(self) -> list[RoundRecord]:
        """Return all rounds in order."""
        with self._lock:
            return [replace(r, metrics=_json(r.metrics)) for _, r in sorted(self._rounds.items())]

    def get_task(self, task_id: str) -> TaskRecord | None:
        """Return one task, or None."""
        with self._lock:
            return self._tasks.get(task_id)

    def tasks_for_round(self, round_number: int) -> list[TaskRecord]:
        """Return a round's tasks ordered by client id."""
        with self._lock:
            found = [t for t in self._tasks.values() if t.round == round_number]
            return sorted(found, key=lambda t: (t.client_id, t.task_id))

    # --- updates -------------------------------------------------------------------------------
    def add_updates(self, items: Sequence[NewUpdate]) -> list[StateError | None]:
        """Store several updates (with their traffic records) in one transaction."""
        outcomes: list[StateError | None] = []
        with self._lock:
            for item in items:
                try:
                    self._add_update(item.update, item.data)
                except StateError as exc:
                    outcomes.append(exc)
                    continue
                if item.traffic is not None:
                    self._traffic.append(item.traffic)
                outcomes.append(None)
        return outcomes

    def _add_update(self, update: UpdateRecord, data: bytes) -> None:
        task = self._tasks.get(update.task_id)
        if task is None:
            raise StateError(f"unknown task {update.task_id!r}")
        if task.client_id != update.client_id or task.round > update.round:
            raise StateError(f"task {update.task_id!r} belongs to another client or a later round")
        self._open(update.round)
        if hashlib.sha256(data).hexdigest() != update.payload_sha:
            raise StateError(f"update for task {update.task_id!r}: payload_sha mismatch")
        if update.task_id in self._updates:
            raise DuplicateUpdate(f"task {update.task_id!r} already has an update")
        self._put(data)
        self._updates[update.task_id] = update

    def updates_for_round(self, round_number: int) -> list[UpdateRecord]:
        """Return a round's updates in the order they were accepted."""
        with self._lock:
            return [u for u in self._updates.values() if u.round == round_number]

    def close_round(
        self,
        round_number: int,
        now: float,
        metrics: dict[str, object],
        checkpoint: bytes,
        ledger: Sequence[LedgerEntry] = (),
    ) -> None:
        """Mark an open round done with its metrics, checkpoint and ledger entries, atomically."""
        with self._lock:
            round_ = self._open(round_number)
            done = replace(round_, status=ROUND_DONE, closed_at=now, metrics=_json(metrics))
            self._checkpoints[round_number] = self._put(checkpoint)
            self._rounds[round_number] = done
            self._ledger.extend(ledger)

    def latest_checkpoint(self) -> tuple[int, bytes]:
        """Return (round, checkpoint bytes) of the newest checkpoint (round 0 is the initial)."""
        with self._lock:
            if not self._checkpoints:
                raise StateError("no checkpoint: the run is not initialized")
            newest = max(self._checkpoints)
            return newest, self._blobs[self._checkpoints[newest]]

    def get_checkpoint(self, round_number: int) -> bytes:
        """Return the checkpoint stored when a round closed (0: the initial one)."""
        with self._lock:
            return self._blobs[self._checkpoints[round_number]]

    # --- accounting ----------------------------------------------------------------------------
    def add_traffic(self, record: TrafficRecord) -> None:
        """Record the serialized bytes of one exchange."""
        with self._lock:
            self._traffic.append(record)

    def list_traffic(self, round_number: int | None = None) -> list[TrafficRecord]:
        """Return traffic records (of one round if given) in insertion order."""
        with self._lock:
            return [t for t in self._traffic if round_number is None or t.round == round_number]

    def append_ledger(self, entry: LedgerEntry) -> None:
        """Append a privacy-ledger entry."""
        with self._lock:
            self._ledger.append(entry)

    def ledger(self) -> list[LedgerEntry]:
        """Return the privacy ledger in round order."""
        with self._lock:
            # sorted() is stable: entries of one round keep their insertion order.
            return sorted(self._ledger, key=lambda e: e.round)
