"""Participation-aware aggregation weights: FedAU (Wang & Ji, ICLR 2024) around any strategy.

Clients that are often away are under-represented in FedAvg's mean, so FedAvg converges to an
objective weighted by participation probability, not the one asked for. FedAU keeps, per client,
an online estimate of its mean participation interval (about 1/p) and multiplies the client's
update by it; the sum is divided by the whole known population, not by the participants, so the
aggregate is an unbiased estimate of the full-participation step whatever the unknown p's are.

Bookkeeping per client, as in the paper's algorithm and its reference code: ``absent`` counts
the rounds since the client last took part; when it takes part, ``absent + 1`` is recorded as
one interval; after ``cutoff`` (K) absent rounds in a row, K is recorded and the count restarts,
which bounds the estimate (and its variance) for clients that almost never come. The weight in
round t is the mean of the intervals recorded *before* t (1 while none is), so it does not
depend on whether the client takes part in t. Example counts still weight clients as the
wrapped strategy says (``update_weight``); with equal counts this is the paper's rule exactly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.run_options import PARTICIPATION_CHOICES
from fedft.core.strategy import ClientInfo, Failure, Result, ServerStrategy, Task
from fedft.core.wrapper import LinearWrapper, without_prefix

logger = logging.getLogger(__name__)

PREFIX = "fedau."
STATE_KEY = PREFIX + "state"
DEFAULT_CUTOFF = 50  # K: the value of the paper's cutoff experiments (reference code README)


@dataclass
class ClientHistory:
    """One client's participation record: recorded intervals, current absence, data size."""

    intervals: int = 0  # how many intervals are recorded (M in the paper)
    interval_sum: float = 0.0
    absent: int = 0  # rounds since it last took part (S)
    size: float = 0.0  # its weight in the objective: the wrapped strategy's update_weight

    def weight(self) -> float:
        """The estimate of 1/p from the intervals so far; 1 before the first one."""
        return self.interval_sum / self.intervals if self.intervals else 1.0

    def record(self, interval: int) -> None:
        """Add one participation interval to the running mean."""
        self.intervals += 1
        self.interval_sum += interval


class FedAUServer(LinearWrapper):
    """FedAU around a :class:`LinearUpdates` server half (``--participation fedau``)."""

    wraps_as = "--participation fedau"

    def __init__(
        self, inner: ServerStrategy[Any], *, seed: int, cutoff: int = DEFAULT_CUTOFF, name: str = ""
    ) -> None:
        super().__init__(inner, seed=seed, name=name)
        if cutoff < 1:
            raise UsageError(f"FedAU cutoff must be >= 1, got {cutoff}")
        self.cutoff = cutoff
        self.history: dict[str, ClientHistory] = {}
        self.start_round = 0  # the first round this wrapper saw; absences count from there
        self.last_round = 0  # the last round aggregated

    # --- bookkeeping ---------------------------------------------------------------------------
    def _absent(self, history: ClientHistory) -> None:
        history.absent += 1
        if history.absent >= self.cutoff:
            history.record(self.cutoff)
            history.absent = 0

    def _meet(self, client_id: str, server_round: int, size: float) -> ClientHistory:
        """The client's history; a newcomer is counted absent since the run began (here)."""
        if not self.start_round:
            self.start_round = server_round
        history = self.history.get(client_id)
        if history is None:
            history = self.history[client_id] = ClientHistory()
            for _ in range(max(self.last_round + 1 - self.start_round, 0)):
                self._absent(history)
        if size > 0:
            history.size = size
        return history

    def weights(self) -> dict[str, float]:
        """Each known client's current aggregation weight (its estimate of 1/p)."""
        return {c: h.weight() for c, h in sorted(self.history.items())}

    # --- a round -------------------------------------------------------------------------------
    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Note who is reachable (and their data sizes); the wrapped strategy picks and builds."""
        for client in clients:
            self._meet(client.client_id, server_round, float(client.num_examples))
        return self.inner.configure(server_round, clients)

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Apply sum(weight * size * vector) / (all known sizes); update the interval estimates."""
        total = torch.zeros(self.linear.update_size(), dtype=torch.float64)
        tally = self.linear.round_tally()
        took_part: set[str] = set()
        accepted = rejected = 0
        loss_sum = size_sum = weight_sum = 0.0
        for result in results:
            problem = self.inner.check_update(server_round, result)
            if problem is not None:
                logger.warning("round %d: rejected %s: %s", server_round, result.client_id, problem)
                rejected += 1
                continue
            vector = self.linear.update_vector(server_round, result)
            self.linear.observe(server_round, result, vector, tally)
            if vector is None:
                continue
            size = self.linear.update_weight(result)
            history = self._meet(result.client_id, server_round, size)
            weight = history.weight()  # from earlier rounds only: independent of this one
            total.add_(vector.to(torch.float64), alpha=weight * size)
            took_part.add(result.client_id)
            accepted += 1
            weight_sum += weight
            size_sum += size
            loss_sum += size * float(result.payload.metrics.get("train_loss", math.nan))
        population = sum(h.size for h in self.history.values())
        for client_id, history in self.history.items():
            if client_id in took_part:
                history.record(history.absent + 1)
                history.absent = 0
            else:
                self._absent(history)
        self.last_round = server_round
        metrics: dict[str, MetricValue] = {
            "accepted": accepted,
            "rejected": rejected,
            **tally,
            "failures": len(failures),
            "fedau.known_clients": len(self.history),
        }
        if accepted and population > 0:
            metrics["train_loss"] = loss_sum / size_sum
            metrics["fedau.mean_weight"] = weight_sum / accepted
            metrics.update(self.linear.apply_update(server_round, total / population))
        return metrics

    # --- delegation and checkpoints ------------------------------------------------------------
    def state_dict(self) -> Payload:
        """The wrapped checkpoint plus every client's participation history (``fedau.state``)."""
        state = self.inner.state_dict()
        record = {
            "cutoff": self.cutoff,
            "start_round": self.start_round,
            "last_round": self.last_round,
            "clients": {
                c: [h.intervals, h.interval_sum, h.absent, h.size]
                for c, h in sorted(self.history.items())
            },
        }
        config = {**state.config, STATE_KEY: json.dumps(record, sort_keys=True)}
        return Payload(tensors=dict(state.tensors), config=config, metrics=dict(state.metrics))

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`; a checkpoint without FedAU state starts afresh."""
        self.inner.load_state_dict(inner_state(state))
        text = state.config.get(STATE_KEY)
        if not isinstance(text, str):
            return
        record = json.loads(text)
        self.cutoff = int(record["cutoff"])
        self.start_round = int(record["start_round"])
        self.last_round = int(record["last_round"])
        self.history = {
            c: ClientHistory(int(m), float(s), int(a), float(z))
            for c, (m, s, a, z) in record["clients"].items()
        }


def inner_state(state: Payload) -> Payload:
    """A checkpoint without its ``fedau.*`` entries: the wrapped strategy's own."""
    return without_prefix(state, PREFIX)


def participation_from_state(state: Payload) -> str:
    """The ``--participation`` a checkpoint was made with: "fedau" or "none"."""
    return "fedau" if isinstance(state.config.get(STATE_KEY), str) else "none"


def check_participation(name: str) -> None:
    """Refuse an unknown ``--participation`` value with a one-line error."""
    if name not in PARTICIPATION_CHOICES:
        raise UsageError(
            f"--participation must be one of {', '.join(PARTICIPATION_CHOICES)}, got {name!r}"
        )
