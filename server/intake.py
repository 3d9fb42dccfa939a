"""Admitting and durably storing client updates for the open round, in memory where it can."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fedft.core.errors import ProtocolError
from fedft.core.serde import payload_from_bytes
from fedft.core.strategy import Result
from fedft.server import metrics as prom
from fedft.server.commit import GroupCommit
from fedft.server.state.base import DuplicateUpdate, RoundClosed, State, StateError
from fedft.server.state.records import (
    ROUND_OPEN,
    NewUpdate,
    TaskRecord,
    TrafficRecord,
    UpdateRecord,
)


class Rejected(Exception):
    """A request the coordinator refuses; ``code`` names the gRPC status the servicer returns."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def reject(code: str, reason: str, message: str) -> Rejected:
    """Count a refusal for Prometheus (by ``reason``) and return the exception to raise."""
    prom.REJECTED.labels(reason=reason).inc()
    return Rejected(code, message)


def sha_hex(data: bytes) -> str:
    """Return the SHA-256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class RoundIndex:
    """The open round's tasks, deadline and answered task ids, kept in memory.

    A round's tasks never change once it is open, only the round loop closes it (``open``),
    and every update of the run is accepted by :meth:`Intake.submit`, which records it here;
    so a fetch, an admission or a completeness check costs O(1) instead of reading the round's
    tasks and updates (O(N²) state reads a round) or one row per call.
    """

    round: int
    tasks: dict[str, list[TaskRecord]]
    by_id: dict[str, TaskRecord]
    count: int
    answered: set[str]
    deadline: float
    open: bool
    # Tasks whose update check_update refused, and why (the host rule; kept in memory only:
    # after a restart such a task waits for the deadline like a silent one).
    refused: dict[str, str] = field(default_factory=dict)

    def done(self) -> bool:
        """Whether every task has a stored update or a refused one."""
        return len(self.answered | self.refused.keys()) >= self.count


def _stale(number: int) -> Rejected:
    return reject("stale", "stale", f"round {number} no longer takes updates")


class Intake:
    """The coordinator's update path: admission, validation, group-committed storage.

    It shares the coordinator's lock, which guards the strategy and the decision to close a
    round. An update is admitted under that lock only while its round takes updates, and then
    counts as pending until its commit returns; :meth:`close_begins` waits for the round's
    pending updates, so every acknowledged update is read by the aggregation, and the lock is
    not held during the commit (its fsync) itself.
    """

    def __init__(
        self,
        state: State,
        lock: threading.RLock,
        changed: threading.Condition,
        clock: Callable[[], float],
        check: Callable[[int, Result], str | None],
    ):
        self.state = state
        self.clock = clock
        self._lock = lock
        self._changed = changed  # the round loop waits here; a Condition on ``lock``
        self._check = check
        self.closing: set[int] = set()
        self._index: RoundIndex | None = None
        # Updates admitted into a round but not yet committed, by round.
        self._pending: dict[int, int] = {}
        # Concurrent submissions share one transaction (and one fsync) instead of one each.
        self._commits = GroupCommit(self._store)

    def _store(self, items: list[NewUpdate]) -> list[StateError | None]:
        # Looked up at each call, not bound once, so that a wrapped state (tests) is honoured.
        return self.state.add_updates(items)

    def round_index(self, number: int) -> RoundIndex:
        """Return the in-memory index of round ``number``, reading it from the state once."""
        with self._lock:
            index = self._index
            if index is None or index.round != number:
                records = self.state.tasks_for_round(number)
                tasks: dict[str, list[TaskRecord]] = {}
                for task in records:
                    tasks.setdefault(task.client_id, []).append(task)
                answered = {u.task_id for u in self.state.updates_for_round(number)}
                stored = self.state.get_round(number)
                index = self._index = RoundIndex(
                    number,
                    tasks,
                    {t.task_id: t for t in records},
                    len(records),
                    answered,
                    stored.deadline if stored is not None else 0.0,
                    stored is not None and stored.status == ROUND_OPEN,
                )
            return index

    def takes_updates(self, number: int) -> bool:
        """Whether round ``number`` is open, not closing and before its deadline."""
        index = self._index
        if index is not None and index.round == number:
            open_, deadline = index.open, index.deadline
        else:  # not the round in memory: an old round, or none indexed yet
            stored = self.state.get_round(number)
            if stored is None:
                return False
            open_, deadline = stored.status == ROUND_OPEN, stored.deadline
        return open_ and number not in self.closing and self.clock() <= deadline

    def owned_task(
        self, task: TaskRecord | None, client_id: str, task_id: str, round_number: int
    ) -> TaskRecord:
        """``task`` if it exists, is ``client_id``'s and belongs to ``round_number``."""
        if task is None:
            raise reject("not_found", "unknown", f"no task {task_id!r}")
        if task.client_id != client_id:
            raise reject("permission", "not_assigned", f"task {task_id} is not assigned to you")
        if task.round != round_number:
            raise reject("invalid", "round", f"task {task_id} belongs to round {task.round}")
        return task

    def admit(self, client_id: str, task_id: str, round_number: int) -> TaskRecord:
        """Check an announced update: the client's own task, the right round, still open."""
        index = self._index
        task = index.by_id.get(task_id) if index is not None else None
        if task is None:  # not a task of the round in memory
            task = self.state.get_task(task_id)
        task = self.owned_task(task, client_id, task_id, round_number)
        if not self.takes_updates(task.round):
            raise _stale(task.round)
        return task

    def submit(
        self,
        client_id: str,
        task_id: str,
        round_number: int,
        data: bytes,
        traffic: tuple[int, int] | None,
    ) -> UpdateRecord:
        """Validate an update and store it durably with its traffic; see Coordinator.submit."""
        task = self.admit(client_id, task_id, round_number)
        try:
            payload = payload_from_bytes(data)
        except ProtocolError as exc:
            raise reject("invalid", "malformed", str(exc)) from None
        digest = sha_hex(data)
        with self._lock:
            number = self.joins(task)
            problem = self._check(self.strategy_round(task), Result(client_id, payload))
            if problem is not None:
                self._refused(task, problem)
                raise reject("invalid", "invalid", problem)
            # From here the round cannot close before this update is stored or refused.
            self._pending[number] = self._pending.get(number, 0) + 1
        now = self.clock()
        record = UpdateRecord(task_id, number, client_id, digest, len(data), now)
        exchange = None
        if traffic is not None:
            up, down = traffic
            exchange = TrafficRecord(
                number, client_id, "SubmitUpdate", up, down, now, payload_up=len(data)
            )
        stored = False
        try:
            refusal = self._commits.run(NewUpdate(record, data, exchange))
            stored = refusal is None
        finally:
            self._settle(task, number, stored)
        if isinstance(refusal, DuplicateUpdate):
            raise reject("duplicate", "duplicate", f"task {task_id} already has an update")
        if isinstance(refusal, RoundClosed):
            raise _stale(number)
        if refusal is not None:
            raise refusal  # a broken invariant (unknown task, sha mismatch), not a client error
        prom.ACCEPTED.inc()
        if traffic is not None:
            prom.BYTES.labels(direction="up").inc(traffic[0])
            prom.BYTES.labels(direction="down").inc(traffic[1])
        return record

    def joins(self, task: TaskRecord) -> int:
        """The round an update for ``task`` joins now (lock held): its own, while it is open."""
        if not self.takes_updates(task.round):
            raise _stale(task.round)
        return task.round

    def strategy_round(self, task: TaskRecord) -> int:
        """The ``server_round`` the strategy knows ``task`` by: its round."""
        return task.round

    def complete(self, number: int) -> bool:
        """Whether every task of round ``number`` has a stored update or a refused one."""
        return self.round_index(number).done()

    def _settle(self, task: TaskRecord, number: int, stored: bool) -> None:
        """Account for a finished commit: the answered task, the pending count, who to wake."""
        with self._lock:
            left = self._pending[number] - 1
            if left:
                self._pending[number] = left
            else:
                del self._pending[number]
            complete = False
            if stored:
                self.round_index(number).answered.add(task.task_id)
                complete = self.complete(number)
            if complete or (not left and number in self.closing):
                self._changed.notify_all()  # the round is complete, or close_begins waits

    def _refused(self, task: TaskRecord, why: str) -> None:
        """Note a refused update (lock held): the round need not wait for that task any more."""
        index = self.round_index(task.round)
        index.refused[task.task_id] = why
        if index.done():
            self._changed.notify_all()

    def refusals(self, number: int) -> dict[str, str]:
        """The tasks of round ``number`` whose update was refused, and why."""
        return dict(self.round_index(number).refused)

    def close_begins(self, number: int) -> None:
        """Refuse new updates to round ``number`` and wait until its admitted ones are stored."""
        with self._lock:
            self.closing.add(number)
            while self._pending.get(number):
                self._changed.wait()

    def close_ends(self, number: int, *, closed: bool) -> None:
        """End a close started by :meth:`close_begins`; ``closed``: the round is done for good."""
        with self._lock:
            self.closing.discard(number)
            if closed and self._index is not None and self._index.round == number:
                self._index.open = False
