"""``--mode async`` in the in-process engine: FedBuff's clients on one virtual clock.

``concurrency`` clients are at work at any virtual moment. A client that starts at virtual time
``t`` gets a task built from the global model as it is at ``t``; its task runs for real at once
(on the model of that version) and its update lands at ``t + seconds``, where ``seconds`` is
the same virtual time a synchronous round gives it (its CPU time times its tier's slowdown, plus
its own bytes over its link). Landings are taken in virtual-time order: each joins the buffer,
the client goes back to the idle pool, and a client drawn at random from the idle ones that are
available starts next. Every ``--buffer`` accepted updates the global model gets a new version;
each version is one entry of ``report.rounds``, whose ``seconds`` is the virtual time since the
previous one, so a synchronous and an asynchronous run compare in seconds, not rounds.

Availability is looked up with the next version's number as its round: a client away for that
version is not started until it is back.
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedft.core.async_options import AsyncSettings
from fedft.core.errors import UsageError
from fedft.core.strategy import ClientInfo, Result
from fedft.simulation.report import Report, RoundReport
from fedft.strategies.buffered import BufferedAggregator

if TYPE_CHECKING:
    from fedft.simulation.engine import InProcessEngine


@dataclass(order=True)
class _Landing:
    """An update on its way: when it lands on the virtual clock, and what it carries."""

    at: float
    ticket: int
    client_id: str = field(compare=False)
    result: Result = field(compare=False)
    record: dict[str, Any] = field(compare=False)
    up: int = field(compare=False, default=0)
    down: int = field(compare=False, default=0)


@dataclass
class _Interval:
    """What happened between two versions: landings, bytes, records."""

    started: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    landed: int = 0
    refused: int = 0
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def default_concurrency(engine: InProcessEngine, infos: list[ClientInfo]) -> int:
    """As many clients as a synchronous first round of the strategy would sample."""
    sample = getattr(engine.config, "sample", None)
    if sample is None:
        return len(infos)
    return max(len(sample(infos, seed=engine.spec.seed, server_round=1)), 1)


class AsyncRun:
    """One asynchronous run of an in-process engine, appending a version per applied buffer."""

    def __init__(self, engine: InProcessEngine, settings: AsyncSettings, infos: list[ClientInfo]):
        self.engine = engine
        self.aggregator = BufferedAggregator(
            engine.server_half, settings, name=engine.spec.strategy
        )
        self.infos = {info.client_id: info for info in infos}
        self.concurrency = min(
            settings.concurrency or default_concurrency(engine, infos), len(infos)
        )
        self.rng = random.Random(engine.spec.seed)
        self.idle = sorted(self.infos)
        self.landings: list[_Landing] = []
        self.now = 0.0
        self.interval = _Interval()

    def _start_some(self) -> None:
        """Start idle, available clients until ``concurrency`` are at work."""
        round_number = self.aggregator.versions + 1
        reachable = set(self.engine.availability.available(round_number))
        candidates = [cid for cid in self.idle if cid in reachable]
        while len(self.landings) < self.concurrency and candidates:
            cid = candidates.pop(self.rng.randrange(len(candidates)))
            self.idle.remove(cid)
            self._start(cid)

    def _start(self, client_id: str) -> None:
        """Dispatch a task to ``client_id`` now, run it, and schedule its landing."""
        from fedft.simulation.engine import _Wire

        dispatch = self.aggregator.dispatch(self.infos[client_id])
        if dispatch is None:
            self.idle.append(client_id)
            return
        wire = _Wire()
        records: dict[str, dict[str, Any]] = {}
        (result,) = self.engine._run_tasks(dispatch.ticket, [dispatch.task], wire, records)
        record = records[client_id]
        record.update(started=round(self.now, 4), version=dispatch.version)
        landing = _Landing(
            self.now + float(record["seconds"]),
            dispatch.ticket,
            client_id,
            result,
            record,
            wire.up,
            wire.down,
        )
        heapq.heappush(self.landings, landing)

    def _land(self) -> None:
        """Take the next update off the clock and into the buffer."""
        landing = heapq.heappop(self.landings)
        self.now = landing.at
        record = landing.record
        record["staleness"] = self.aggregator.staleness(landing.ticket)
        refusal = self.aggregator.submit(landing.ticket, landing.result)
        interval = self.interval
        interval.landed += 1
        interval.bytes_up += landing.up
        interval.bytes_down += landing.down
        if refusal is not None:
            record["refused"] = refusal
            interval.refused += 1
        key = landing.client_id
        while key in interval.records:  # a fast client may land twice between two versions
            key += "+"
        interval.records[key] = record
        self.idle.append(landing.client_id)

    def _apply(self, report: Report) -> None:
        """Apply the buffer as the next version and append it to the report."""
        engine = self.engine
        started = time.process_time()
        metrics = self.aggregator.apply()
        self.now += time.process_time() - started  # the server's own work, as in a sync round
        metrics["refused"] = self.interval.refused
        eval_loss = engine._evaluate()
        interval = self.interval
        report.rounds.append(
            RoundReport(
                round=self.aggregator.versions,
                eval_loss=eval_loss,
                bytes_up=interval.bytes_up,
                bytes_down=interval.bytes_down,
                participants=interval.landed,
                seconds=round(self.now - interval.started, 4),
                metrics=metrics,
                clients=interval.records,
            )
        )
        report.write(engine.spec.out)
        self.interval = _Interval(started=self.now)

    def run(self, report: Report) -> None:
        """Run until ``--rounds`` versions are applied, writing the report after each."""
        rounds = self.engine.spec.rounds
        self._start_some()
        while self.aggregator.versions < rounds:
            self.engine.progress("round", self.aggregator.versions, rounds)
            if not self.landings:
                raise UsageError(
                    f"async run stalled at version {self.aggregator.versions}: no client is "
                    "available to start a task (check --availability)"
                )
            self._land()
            if self.aggregator.ready():
                self._apply(report)
            self._start_some()
