"""The coordinator's round engine: hosts any registered strategy over durable state, no gRPC."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fedft.core.async_options import AsyncSettings
from fedft.core.hosting import REJECTED, refusal, rejected_count
from fedft.core.payload import MetricValue, Payload
from fedft.core.registry import StrategySpec
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Failure, Result, ServerStrategy, Task
from fedft.core.wrapper import without_prefix
from fedft.privacy.config import DPConfig
from fedft.privacy.robust import RobustConfig, robust_from_state
from fedft.privacy.secagg.state import SecAggSettings, secagg_from_state
from fedft.privacy.wrapper import dp_settings_from_state
from fedft.runtime.server_assembly import wrap_server
from fedft.server import metrics as prom
from fedft.server.enrollment import ClientDirectory
from fedft.server.influence import InfluenceBounds
from fedft.server.intake import Intake, Rejected
from fedft.server.round_view import MISSING, UPDATES
from fedft.server.settings import CoordinatorSettings
from fedft.server.state.base import State
from fedft.server.state.records import (
    ROUND_DONE,
    ROUND_OPEN,
    ClientRecord,
    LedgerEntry,
    RoundRecord,
    RunRecord,
    TaskRecord,
    TrafficRecord,
    UpdateRecord,
)
from fedft.server.tasks import task_records
from fedft.strategies.buffered import STATE_PREFIX, async_from_state, describe
from fedft.strategies.participation import participation_from_state

# Rejected and CoordinatorSettings live in their own modules; both stay importable from here.
__all__ = ["Assignment", "Coordinator", "CoordinatorSettings", "Rejected"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    """A task handed to a client: its record, serialized payload and deadline."""

    task: TaskRecord
    data: bytes
    deadline: float


class Coordinator:
    """Drives ``configure → collect → aggregate`` rounds for one run over a :class:`State`.

    Thread-safe: the gRPC servicer calls it from many threads while :meth:`run_rounds` runs the
    round loop in its own. ``_lock`` guards the strategy and the decision to close a round, so
    an update is either stored before its round starts aggregating or refused as late: an
    acknowledged update is never left out.
    """

    def __init__(
        self,
        state: State,
        strategy: StrategySpec,
        strategy_config: dict[str, Any],
        *,
        seed: int,
        settings: CoordinatorSettings,
        model: str,
        initial: Payload,
        clock: Callable[[], float] = time.time,
        privacy: DPConfig | None = None,
        robust: RobustConfig | None = None,
        participation: str = "none",
    ):
        self.state = state
        self.strategy = strategy
        self.settings = settings
        self.clock = clock
        self.config = strategy.make_config(strategy_config)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        # Long-polling fetches wait here, woken only when a round opens or closes (or on stop),
        # not by every submit and heartbeat; ``_generation`` counts those events.
        self._rounds_changed = threading.Condition(self._lock)
        self._generation = 0
        self.clients = ClientDirectory(state, clock, settings.liveness_s, self._notify)
        self._stop = threading.Event()
        stored = state.get_run()
        if stored is not None:
            if stored.strategy != strategy.name:
                raise ValueError(
                    f"this database holds a {stored.strategy!r} run, not {strategy.name!r}; "
                    "use another --db to start a new run"
                )
            # The run's identity is what was stored: a restart must not change the algorithm.
            resumed = strategy.make_config(stored.config)
            if (resumed.to_dict(), stored.seed, stored.rounds) != (
                self.config.to_dict(),
                seed,
                settings.rounds,
            ):
                logger.warning(
                    "resuming run %s with its stored config, seed and rounds", stored.run_id
                )
            self.config, seed = resumed, stored.seed
            self.settings = dataclasses.replace(settings, rounds=stored.rounds)
            # DP settings, the robust rule and FedAU's interval estimates live in the
            # checkpoint: a restart can neither drop nor change them.
            checkpoint = payload_from_bytes(state.latest_checkpoint()[1])
            kept = (
                dp_settings_from_state(checkpoint),
                robust_from_state(checkpoint),
                participation_from_state(checkpoint),
            )
            if kept != (privacy, robust, participation):
                logger.warning(
                    "resuming run %s with its stored DP, robust and participation settings",
                    stored.run_id,
                )
            privacy, robust, participation = kept
            self._resume_mode(async_from_state(checkpoint))
            self._resume_secagg(secagg_from_state(checkpoint))
        # The assembly point wraps the server half as every engine does (DP, robust
        # aggregation, FedAU); each round's ledger entry is stored with the round's checkpoint.
        self.server_half: ServerStrategy[Any]
        self.server_half, self.dp_server = wrap_server(
            strategy.server_cls(self.config, seed=seed),
            seed=seed,
            dp=privacy,
            robust=robust,
            name=strategy.name,
            participation=participation,
        )
        self.intake = self._new_intake(
            InfluenceBounds(
                self.clients.reported_examples, self.settings, lambda: self.server_half
            ).check
        )
        self.run = self._resume(stored) if stored else self._create(seed, model, initial)

    # --- start-up (the hooks a host mode overrides: fedft.server.async_coordinator) ----------
    def _resume_mode(self, stored: tuple[AsyncSettings, int] | None) -> None:
        """Refuse to resume an asynchronous run's database as a synchronous run."""
        if stored is not None:
            raise ValueError(
                f"this database holds an asynchronous run: restart it with {describe(stored[0])}"
            )

    def _resume_secagg(self, stored: SecAggSettings | None) -> None:
        """Refuse to resume a ``--secagg`` run's database without secure aggregation."""
        if stored is not None:
            raise ValueError(
                "this database holds a run with secure aggregation: restart it with --secagg"
            )

    def _new_intake(self, check: Callable[[int, Result], str | None]) -> Intake:
        """The update path: synchronous rounds take updates for their own tasks only."""
        return Intake(self.state, self._lock, self._changed, self.clock, check)

    def _started(self) -> None:
        """Called once the strategy holds the run's state (created or resumed)."""

    def _checkpoint(self) -> bytes:
        """The durable checkpoint of the server half (taken with the lock held)."""
        return payload_to_bytes(self.server_half.state_dict())

    def _load_checkpoint(self, data: bytes) -> None:
        """Restore the server half from :meth:`_checkpoint`'s bytes."""
        self.server_half.load_state_dict(without_prefix(payload_from_bytes(data), STATE_PREFIX))

    def _create(self, seed: int, model: str, initial: Payload) -> RunRecord:
        self.server_half.initialize(initial)
        self._started()
        fresh = RunRecord(
            run_id=uuid.uuid4().hex,
            strategy=self.strategy.name,
            config=dict(self.config.to_dict()),
            seed=seed,
            rounds=self.settings.rounds,
            model=model,
            created_at=self.clock(),
        )
        return self.state.initialize_run(fresh, self._checkpoint())

    def _resume(self, run: RunRecord) -> RunRecord:
        done_round, checkpoint = self.state.latest_checkpoint()
        self._load_checkpoint(checkpoint)
        self._started()
        open_round = self._open_round()
        if open_round is not None:
            # Clients could not submit while we were down: give them time to reconnect.
            grace = self.clock() + self.settings.restart_grace_s
            if open_round.deadline < grace:
                self.state.extend_deadline(open_round.round, grace)
        logger.info("resumed run %s after round %d", run.run_id, done_round)
        return run

    # --- queries -------------------------------------------------------------------------------
    def _open_round(self) -> RoundRecord | None:
        rounds = self.state.list_rounds()
        if rounds and rounds[-1].status == ROUND_OPEN:
            return rounds[-1]
        return None

    def current_round(self) -> int:
        """Return the number of the newest round (0 before the first)."""
        rounds = self.state.list_rounds()
        return rounds[-1].round if rounds else 0

    def finished(self) -> bool:
        """Whether the last round is done."""
        last = self.state.get_round(self.settings.rounds)
        return last is not None and last.status == ROUND_DONE

    # --- client calls (identity and liveness live in the directory) --------------------------
    def public_key(self, client_id: str) -> bytes | None:
        """Return the public key that verifies ``client_id``'s requests, if enrolled."""
        return self.clients.public_key(client_id)

    def alive_clients(self) -> list[ClientRecord]:
        """Return the clients seen within the liveness window."""
        return self.clients.alive()

    def enroll(
        self,
        token: str,
        public_key: bytes,
        requested_id: str = "",
        *,
        num_examples: int = 0,
        properties: dict[str, Any] | None = None,
    ) -> ClientRecord:
        """Exchange a one-time token and a public key for a client identity."""
        return self.clients.enroll(
            token, public_key, requested_id, num_examples=num_examples, properties=properties
        )

    def heartbeat(
        self,
        client_id: str,
        *,
        num_examples: int | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Record that a client is alive, with its latest profile."""
        self.clients.heartbeat(client_id, num_examples=num_examples, properties=properties)

    def fetch_task(self, client_id: str, wait_s: float) -> Assignment | None:
        """Return the client's unanswered task in the open round, waiting up to ``wait_s``."""
        self.state.touch_client(client_id, self.clock())
        self._notify()  # a waiting round may start now that this client is alive
        until = self.clock() + max(0.0, wait_s)
        with self._rounds_changed:
            while True:
                seen = self._generation
                assignment = self._assignment_for(client_id)
                if assignment is not None or self.finished() or self._stop.is_set():
                    return assignment
                while self._generation == seen and not self._stop.is_set():
                    remaining = until - self.clock()
                    if remaining <= 0:
                        return None
                    self._rounds_changed.wait(min(remaining, 1.0))

    def _assignment_for(self, client_id: str) -> Assignment | None:
        current = self._open_round()
        if current is None or current.round in self.intake.closing:
            return None
        index = self.intake.round_index(current.round)
        for task in index.tasks.get(client_id, ()):
            if task.task_id not in index.answered:
                data = b"".join(self.state.get_blob(sha) for sha in task.payload_shas)
                return Assignment(task, data, current.deadline)
        return None

    def admit(self, client_id: str, task_id: str, round_number: int) -> TaskRecord:
        """Check an announced update before its bytes arrive: own task, right round, still open.

        The servicer calls this right after the header, so nobody can make the server buffer a
        large upload for a task that would be refused anyway.
        """
        return self.intake.admit(client_id, task_id, round_number)

    def submit(
        self,
        client_id: str,
        task_id: str,
        round_number: int,
        data: bytes,
        *,
        traffic: tuple[int, int] | None = None,
    ) -> UpdateRecord:
        """Validate and durably store an update; raise :class:`Rejected` with the reason.

        ``traffic`` is the (up, down) serialized bytes of the call that carried the update; it
        is stored in the update's transaction. Concurrent calls share one commit.
        """
        return self.intake.submit(client_id, task_id, round_number, data, traffic)

    def global_payload(self) -> bytes:
        """Return the serialized global state (what ``load_global`` expects)."""
        with self._lock:
            return payload_to_bytes(self.server_half.global_state())

    def record_traffic(
        self,
        client_id: str,
        rpc: str,
        *,
        up: int,
        down: int,
        payload_up: int = 0,
        payload_down: int = 0,
        round_number: int | None = None,
    ) -> None:
        """Store the serialized bytes of one exchange (messages and the payload inside them)."""
        number = self.current_round() if round_number is None else round_number
        self.state.add_traffic(
            TrafficRecord(number, client_id, rpc, up, down, self.clock(), payload_up, payload_down)
        )
        prom.BYTES.labels(direction="up").inc(up)
        prom.BYTES.labels(direction="down").inc(down)

    # --- the round loop ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run_rounds` and waiting calls to return."""
        self._stop.set()
        self._notify_rounds()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _notify_rounds(self) -> None:
        """Wake long-polling fetches and the round loop: a round opened or closed, or stop."""
        with self._lock:
            self._generation += 1
            self._rounds_changed.notify_all()
            self._changed.notify_all()

    def run_rounds(self) -> None:
        """Run rounds until the last one is done or :meth:`stop` is called."""
        while not self._stop.is_set() and not self.finished():
            current = self._open_round()
            if current is None:
                if not self._start_next_round():
                    self._wait(0.5)
            elif self._round_complete(current):
                self._close(current)
            else:
                self._wait(min(max(current.deadline - self.clock(), 0.01), 0.5))
        self._notify_rounds()

    def _wait(self, seconds: float) -> None:
        with self._changed:
            self._changed.wait(seconds)

    def _start_next_round(self) -> bool:
        number = self.current_round() + 1
        alive = self.alive_clients()
        if len(alive) < self.settings.min_clients:
            return False
        infos = [ClientInfo(c.client_id, c.num_examples, c.properties) for c in alive]
        with self._lock:
            tasks = self._prepare(number, self.server_half.configure(number, infos), infos)
        if not tasks and self.dp_server is None:
            return False
        # Under DP an empty Poisson sample is still a round: it releases noise only, and
        # skipping it would reveal that nobody (e.g. not the client in question) was sampled.
        now = self.clock()
        records, blobs = task_records(number, tasks, now)
        deadline = now + self.settings.round_timeout_s
        self.state.open_round(RoundRecord(number, ROUND_OPEN, now, deadline), records, blobs)
        prom.ROUND.set(number)
        logger.info("round %d started with %d tasks", number, len(records))
        self._notify_rounds()
        return True

    def _round_complete(self, current: RoundRecord) -> bool:
        if self.clock() >= current.deadline:
            return True
        return self.intake.complete(current.round)

    def _close(self, current: RoundRecord) -> None:
        self.intake.close_begins(current.round)  # admitted updates land before we read them
        closed = False
        try:
            updates = self.state.updates_for_round(current.round)
            answered = {u.task_id for u in updates}
            refused = self.intake.refusals(current.round)
            # The host rule: a refused update is a failure that says so, counted as rejected.
            failures = [
                refusal(t.client_id, refused[t.task_id])
                if t.task_id in refused
                else Failure(t.client_id, "no update before the deadline")
                for t in self.state.tasks_for_round(current.round)
                if t.task_id not in answered
            ]
            with self._lock:
                metrics = self._aggregate(current.round, updates, failures)
                checkpoint = self._checkpoint()
            summary: dict[str, MetricValue] = {
                **metrics,
                UPDATES: len(updates),
                MISSING: len(failures),
                REJECTED: rejected_count(failures),
            }
            self.state.close_round(
                current.round, self.clock(), dict(summary), checkpoint, self._ledger_entries()
            )
            closed = True
        except Exception:
            # The strategy may be half-updated: return to the last durable checkpoint.
            self._restore_latest()
            raise
        finally:
            self.intake.close_ends(current.round, closed=closed)
            self._notify_rounds()
        prom.ROUNDS_DONE.inc()
        logger.info("round %d done: %s", current.round, summary)
        self._notify()

    def _prepare(self, number: int, tasks: list[Task], infos: list[ClientInfo]) -> list[Task]:
        """The round's tasks as they are stored and sent (lock held); a host mode adds to them."""
        return tasks

    def _aggregate(
        self, number: int, updates: list[UpdateRecord], failures: list[Failure]
    ) -> dict[str, MetricValue]:
        """Fold round ``number``'s stored updates into the strategy (lock held)."""
        return self.server_half.aggregate(number, self._results(updates), failures)

    def _restore_latest(self) -> None:
        """Return the strategy to the last durable checkpoint (after a failed aggregation)."""
        _, checkpoint = self.state.latest_checkpoint()
        with self._lock:
            self._load_checkpoint(checkpoint)

    def _ledger_entries(self) -> list[LedgerEntry]:
        """The privacy ledger entry of the round just aggregated (none without DP)."""
        entry = self.dp_server.last_entry if self.dp_server is not None else None
        if entry is None:
            return []
        return [LedgerEntry(**entry.to_dict())]

    def _results(self, updates: list[UpdateRecord]) -> Iterator[Result]:
        """Load updates one at a time, so aggregation memory does not grow with clients."""
        for update in updates:
            yield Result(
                update.client_id, payload_from_bytes(self.state.get_blob(update.payload_sha))
            )
