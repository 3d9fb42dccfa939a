"""The coordinator in ``--mode async`` (FedBuff): tasks on fetch, a new version every K updates.

The durable layout reuses the synchronous one. Round ``N`` is the buffer that becomes global
version ``N``: it is open while updates collect, and closing it applies them and stores the
version's checkpoint. A task is created when a client fetches, in the round open at that moment
(so it was built from version ``N - 1``), and carries its ticket, the number the strategy knows
it by. Its update joins whichever round is open when it arrives, ``s`` versions later, and
counts with FedBuff's discount ``1 / sqrt(1 + s)``; one staler than ``--max-staleness`` is
refused (FAILED_PRECONDITION, with the versions in the message). An acknowledged update is a
committed row of its round, so a coordinator killed at any point applies it after the restart:
the buffer is rebuilt from the open round's rows and each task's ticket and round.

A task's strategy bookkeeping made after the last checkpoint (e.g. fedavg_lora's map from ticket
to version) is lost in a crash; every such task was built from the checkpoint's version, which
is what the strategies assume for a ticket they do not know.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from fedft.core.async_options import AsyncSettings
from fedft.core.hosting import REJECTED
from fedft.core.payload import MetricValue
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.server import metrics as prom
from fedft.server.coordinator import Assignment, Coordinator
from fedft.server.intake import Intake, reject
from fedft.server.round_view import MISSING, UPDATES
from fedft.server.state.records import ROUND_OPEN, RoundRecord, TaskRecord
from fedft.server.tasks import task_records
from fedft.strategies.buffered import (
    BufferedAggregator,
    async_from_state,
    describe,
    with_async_state,
)

logger = logging.getLogger(__name__)

# How long an update arriving while a version is being applied waits for the next round.
JOIN_WAIT_S = 30.0


class AsyncIntake(Intake):
    """The update path of an asynchronous run: a task's update joins the open round."""

    def __init__(self, *args: Any, settings: AsyncSettings, open_round: Callable[[], int | None],
                 finished: Callable[[], bool]) -> None:  # fmt: skip
        super().__init__(*args)
        self.settings = settings
        self._open_round = open_round
        self._finished = finished

    def _staleness(self, task: TaskRecord, number: int) -> int:
        """Versions applied since ``task`` was built; refused beyond the cap."""
        staleness = number - task.round
        if staleness > self.settings.max_staleness:
            raise reject(
                "stale",
                "stale",
                f"stale update: task {task.task_id} was built from version {task.round - 1}, "
                f"{staleness} versions behind the current {number - 1} "
                f"(--max-staleness {self.settings.max_staleness}); fetch a new task",
            )
        return staleness

    def admit(self, client_id: str, task_id: str, round_number: int) -> TaskRecord:
        """The synchronous checks of ownership and round, then the staleness cap."""
        task = self.state.get_task(task_id)
        if task is not None and task.ticket is None:  # a synchronous task: not one of ours
            task = None
        task = self.owned_task(task, client_id, task_id, round_number)
        number = self._open_round()
        if number is not None:
            self._staleness(task, number)
        elif self._finished():
            raise reject("stale", "stale", "the run is finished")
        return task

    def _room(self, number: int) -> bool:
        """Whether round ``number`` takes another update: stored and pending below ``buffer``."""
        taken = len(self.round_index(number).answered) + self._pending.get(number, 0)
        return number not in self.closing and taken < self.settings.buffer

    def joins(self, task: TaskRecord) -> int:
        """The open round, waiting (lock held) while it is full or being applied.

        A full buffer takes no more updates, so each version applies exactly ``buffer`` of them
        (fewer only at the round's deadline).
        """
        waited = 0.0
        while True:
            number = self._open_round()
            if number is not None and self._room(number):
                self._staleness(task, number)
                return number
            if self._finished() or waited >= JOIN_WAIT_S:
                raise reject("stale", "stale", "the run is finished or no round is open")
            self._changed.wait(0.5)
            waited += 0.5

    def strategy_round(self, task: TaskRecord) -> int:
        """The task's ticket."""
        assert task.ticket is not None  # admit refused tasks without one
        return task.ticket

    def complete(self, number: int) -> bool:
        """Whether round ``number``'s buffer holds ``--buffer`` updates."""
        return len(self.round_index(number).answered) >= self.settings.buffer

    def _refused(self, task: TaskRecord, why: str) -> None:
        """Nothing to note: no round waits for a particular asynchronous task."""


class AsyncCoordinator(Coordinator):
    """A :class:`Coordinator` whose rounds are FedBuff's buffers; see the module docstring."""

    def __init__(self, *args: Any, mode: AsyncSettings, **kwargs: Any) -> None:
        self.mode = mode
        self._latest: dict[str, TaskRecord] = {}  # each client's newest task
        self._open_number: int | None = None
        super().__init__(*args, **kwargs)

    # --- hooks of the synchronous coordinator ------------------------------------------------
    def _new_intake(self, check: Callable[[int, Result], str | None]) -> Intake:
        return AsyncIntake(
            self.state, self._lock, self._changed, self.clock, check,
            settings=self.mode, open_round=lambda: self._open_number, finished=self.finished,
        )  # fmt: skip

    def _resume_mode(self, stored: tuple[AsyncSettings, int] | None) -> None:
        if stored is None:
            raise ValueError("this database holds a synchronous run: --mode async needs a new --db")
        if stored[0] != self.mode:
            logger.warning("resuming with the run's stored settings: %s", describe(stored[0]))
        self.mode = stored[0]

    def _started(self) -> None:
        self.aggregator = BufferedAggregator(self.server_half, self.mode, name=self.strategy.name)
        stored = self.state.get_run()
        if stored is None:
            return
        done, checkpoint = self.state.latest_checkpoint()
        self.aggregator.versions = done
        self.aggregator.counter = max(self.aggregator.counter, self._stored_counter(checkpoint))
        current = self._open_round()
        if current is not None:
            self._open_number = current.round
            for task in self.state.tasks_for_round(current.round):
                self._latest[task.client_id] = task
                self.aggregator.counter = max(self.aggregator.counter, task.ticket or 0)

    @staticmethod
    def _stored_counter(checkpoint: bytes) -> int:
        found = async_from_state(payload_from_bytes(checkpoint))
        return found[1] if found is not None else 0

    def _load_checkpoint(self, data: bytes) -> None:
        super()._load_checkpoint(data)
        if hasattr(self, "aggregator"):  # a reload after a failed apply: keep the old versions
            self.aggregator.strategy.keep_versions(self.mode.max_staleness)

    def _checkpoint(self) -> bytes:
        state = self.server_half.state_dict()
        counter = self.aggregator.counter if hasattr(self, "aggregator") else 0
        return payload_to_bytes(with_async_state(state, self.mode, counter))

    # --- tasks: one per fetch, from the version current at that moment -----------------------
    def _assignment_for(self, client_id: str) -> Assignment | None:
        number = self._open_number
        if number is None or number in self.intake.closing:
            return None
        deadline = self.clock() + self.settings.round_timeout_s
        task = self._latest.get(client_id)
        answered = self.intake.round_index(number).answered
        if task is None or task.round != number or task.task_id in answered:
            task = self._dispatch(client_id, number)
            if task is None:
                return None
        data = b"".join(self.state.get_blob(sha) for sha in task.payload_shas)
        return Assignment(task, data, deadline)

    def _dispatch(self, client_id: str, number: int) -> TaskRecord | None:
        """Build, store and remember a new task for ``client_id`` (lock held)."""
        record = self.state.get_client(client_id)
        if record is None:
            return None
        info = ClientInfo(record.client_id, record.num_examples, record.properties)
        dispatch = self.aggregator.dispatch(info)
        if dispatch is None:
            return None
        records, blobs = task_records(number, [dispatch.task], self.clock())
        task = dataclasses.replace(records[0], ticket=dispatch.ticket)
        self.state.add_tasks(number, [task], blobs)
        self._latest[client_id] = task
        return task

    # --- rounds: open one empty buffer after another ------------------------------------------
    def _start_next_round(self) -> bool:
        number = self.current_round() + 1
        if number > self.settings.rounds:
            return False
        now = self.clock()
        record = RoundRecord(number, ROUND_OPEN, now, now + self.settings.round_timeout_s)
        self.state.open_round(record, [], [])
        with self._lock:
            self._open_number = number
        prom.ROUND.set(number)
        self._notify_rounds()
        return True

    def _round_complete(self, current: RoundRecord) -> bool:
        if self.intake.complete(current.round):
            return True
        if self.clock() < current.deadline:
            return False
        # At the deadline a partial buffer is applied; an empty one keeps waiting.
        if self.intake.round_index(current.round).answered:
            return True
        deadline = self.clock() + self.settings.round_timeout_s
        self.state.extend_deadline(current.round, deadline)
        return False

    def _close(self, current: RoundRecord) -> None:
        number = current.round
        self.intake.close_begins(number)  # admitted updates land before we read them
        closed = False
        try:
            updates = self.state.updates_for_round(number)
            with self._lock:
                metrics = self._apply(number, updates)
                checkpoint = self._checkpoint()
            summary: dict[str, MetricValue] = {
                **metrics, UPDATES: len(updates), MISSING: 0, REJECTED: 0,
            }  # fmt: skip
            self.state.close_round(number, self.clock(), dict(summary), checkpoint, [])
            closed = True
            with self._lock:
                self._open_number = None
        except Exception:
            self._restore_latest()
            self.aggregator.versions = number - 1
            raise
        finally:
            self.intake.close_ends(number, closed=closed)
            self._notify_rounds()
        prom.ROUNDS_DONE.inc()
        logger.info("version %d applied: %s", number, summary)
        self._notify()

    def _apply(self, number: int, updates: list[Any]) -> dict[str, MetricValue]:
        """Buffer round ``number``'s stored updates and apply them as version ``number``."""
        aggregator = self.aggregator
        aggregator.versions = number - 1
        dropped = 0
        for update in updates:
            task = self.state.get_task(update.task_id)
            if task is None or task.ticket is None:
                raise RuntimeError(f"update {update.task_id} has no asynchronous task")
            aggregator.outstanding[task.ticket] = task.round - 1
            payload = payload_from_bytes(self.state.get_blob(update.payload_sha))
            problem = aggregator.submit(task.ticket, Result(update.client_id, payload))
            if problem is not None:
                # Checked when it arrived, so only a changed strategy gets here; one update
                # must not stop the run.
                logger.warning("version %d leaves out %s: %s", number, update.task_id, problem)
                dropped += 1
        # A buffer of resync requests only (seed clients that lost their state) still makes
        # a version, unchanged: round N is version N by construction.
        return {**aggregator.apply(empty_ok=True), "dropped": dropped}
