"""The strategy plugin API: a server half and a client half, written once, run by every host."""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic

import torch

from fedft.core.config import ConfigT
from fedft.core.payload import ConfigValue, MetricValue, Payload
from fedft.core.trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientInfo:
    """A client the host can reach this round, as the server half sees it."""

    client_id: str
    num_examples: int = 0
    properties: Mapping[str, ConfigValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """Work the server half sends to one client for one round."""

    client_id: str
    payload: Payload


@dataclass(frozen=True)
class Result:
    """A client's answer to its task, after it crossed the wire."""

    client_id: str
    payload: Payload


@dataclass(frozen=True)
class Failure:
    """A sampled client that gave no usable result this round, and why."""

    client_id: str
    reason: str


class ServerStrategy(ABC, Generic[ConfigT]):
    """Server half: picks clients, builds their tasks, aggregates their results.

    Hosts (the in-process simulator, the gRPC coordinator, the Flower adapter) call, in order:
    ``initialize`` once (or ``load_state_dict`` when resuming), then per round ``configure`` and
    ``aggregate``. ``state_dict`` must capture everything needed to resume after a crash.

    The host rule, the same in every host: each result goes through :meth:`check_update` before
    anything else happens to it, and only accepted results reach :meth:`aggregate`. A refused
    result is handed to ``aggregate`` as a :class:`Failure` (its client id and the refusal) in
    ``failures``, just like a client that never answered, so every host counts a bad update the
    same way.
    """

    def __init__(self, config: ConfigT, *, seed: int) -> None:
        self.config = config
        self.seed = seed

    @abstractmethod
    def initialize(self, initial: Payload) -> None:
        """Set the starting global state from what the client half's ``initial_state`` produced."""

    @abstractmethod
    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Choose this round's participants among ``clients`` and build one task for each."""

    @abstractmethod
    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Fold the round's results into the global state; returns round metrics.

        ``results`` holds only updates :meth:`check_update` accepted (the host rule above);
        ``failures`` holds the sampled clients that gave none, refused updates included.
        ``results`` may be a one-pass iterable (the coordinator streams them from its state
        store), so implementations must not need to hold all of them at once.
        """

    def check_update(self, server_round: int, result: Result) -> str | None:
        """Say why an update cannot be aggregated (wrong names, shapes, dtypes...), or None.

        Hosts call this on every result before they accept and store it, so a bad update is
        refused at the door rather than discarded at aggregation time; a refused one becomes a
        :class:`Failure` with this reason. It must not change the strategy's state. The default
        accepts everything.
        """
        return None

    @abstractmethod
    def global_state(self) -> Payload:
        """Return what a client half needs to rebuild the current global model (``load_global``)."""

    @abstractmethod
    def state_dict(self) -> Payload:
        """Return a checkpoint of the server half."""

    @abstractmethod
    def load_state_dict(self, state: Payload) -> None:
        """Restore the server half from :meth:`state_dict` output."""


class LinearUpdates(ServerStrategy[ConfigT]):
    """A server half whose round is "global += the weighted mean of per-client vectors".

    Such a strategy writes its aggregation once, as three methods: :meth:`update_vector` (one
    client's update as a flat vector), :meth:`update_weight` (its weight in the mean) and
    :meth:`apply_update` (add a mean vector to the global model). The default :meth:`aggregate`
    is the weighted mean of the vectors handed to ``apply_update``. Wrappers that must see each
    client's vector (the DP wrapper clips and noises it, the privacy audit inserts canaries into
    it) call the same three methods instead of ``aggregate``, so hosts and wrappers stay free of
    strategy-specific code. The vector lives in the strategy's trainable space (LoRA: the adapter
    delta; FedKSeed: one scalar per seed; Ferret: one coefficient per (seed, block)) and is, up
    to a fixed positive factor the strategy documents (e.g. a learning rate), the change the
    client's update asks of the global model.
    """

    # Secure aggregation's defaults for these vectors (``fedft.privacy.secagg``): every
    # coordinate is clipped to this bound before it is encoded in a ring of this many bits.
    secagg_clip: float = 1.0
    secagg_ring_bits: int = 32

    @abstractmethod
    def update_size(self) -> int:
        """Return the length of every update vector (valid once initialized)."""

    @abstractmethod
    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        """Return the client's update as a flat float64 vector, or None if it carries none.

        Called once per accepted result (``check_update`` already passed), so it may do the
        per-client bookkeeping ``aggregate`` would do (e.g. record the client's version).
        """

    @abstractmethod
    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        """Add ``mean`` (a vector of ``update_size``) to the global model; return round metrics."""

    def keep_versions(self, count: int) -> None:
        """Keep what :meth:`update_vector` needs for updates up to ``count`` versions stale.

        Asynchronous hosts (``fedft.strategies.buffered``) call this once before the first task:
        an update may then arrive after newer versions were applied, and its vector must still
        be measured against the model its task was built from. Strategies whose vectors are
        relative by construction (seed coefficients) need nothing: the default keeps nothing.
        """

    def async_problem(self) -> str | None:
        """Say why this strategy, as configured, cannot run asynchronously, or None if it can."""
        return None

    def update_weight(self, result: Result) -> float:
        """Return the result's weight in the mean: its ``num_examples`` metric by default."""
        return float(result.payload.metrics["num_examples"])

    def observe(
        self,
        server_round: int,
        result: Result,
        vector: torch.Tensor | None,
        tally: dict[str, MetricValue],
    ) -> None:
        """Note one accepted result in :meth:`aggregate` (never under DP); default: nothing.

        ``vector`` is what :meth:`update_vector` returned for it. A strategy counts what its
        round metrics report here (``tally`` starts as :meth:`round_tally`) and may learn from
        the individual update, which a DP wrapper must not let it do.
        """

    def round_tally(self) -> dict[str, MetricValue]:
        """Return the per-round counters :meth:`observe` fills, all at zero (default: none)."""
        return {}

    def note_public(self, server_round: int, result: Result) -> None:
        """Note a result whose vector reached the server only inside a secure sum (SecAgg).

        ``result`` then carries the reply's public metrics and no tensors; a strategy keeps here
        the bookkeeping its :meth:`update_vector` does besides measuring the vector (e.g. the
        version a client synced to). The default keeps nothing.
        """

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Apply the weighted mean of the results' update vectors; return round metrics.

        Results that :meth:`check_update` refuses are logged and counted as ``rejected`` (hosts
        already keep them out; the check stays as a guard for hosts that do not). Results whose
        vector is None count neither as accepted nor in the mean. Metrics: ``accepted``,
        ``rejected``, the strategy's tally, ``failures``, the weighted ``train_loss`` when some
        update was accepted, then whatever :meth:`apply_update` reports.
        """
        total = torch.zeros(self.update_size(), dtype=torch.float64)
        tally = self.round_tally()
        accepted = rejected = 0
        weight_sum = loss_sum = 0.0
        for result in results:
            problem = self.check_update(server_round, result)
            if problem is not None:
                logger.warning("round %d: rejected %s: %s", server_round, result.client_id, problem)
                rejected += 1
                continue
            vector = self.update_vector(server_round, result)
            self.observe(server_round, result, vector, tally)
            if vector is None:
                continue
            weight = self.update_weight(result)
            total.add_(vector.to(torch.float64), alpha=weight)
            weight_sum += weight
            loss_sum += weight * float(result.payload.metrics.get("train_loss", math.nan))
            accepted += 1
        metrics: dict[str, MetricValue] = {
            "accepted": accepted,
            "rejected": rejected,
            **tally,
            "failures": len(failures),
        }
        if accepted:
            metrics["train_loss"] = loss_sum / weight_sum
            metrics.update(self.apply_update(server_round, total / weight_sum))
        return metrics


class ClientStrategy(ABC, Generic[ConfigT]):
    """Client half: turns a task into an update using the host's trainer runtime."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abstractmethod
    def prepare(self, trainer: Trainer) -> None:
        """Adapt the trainer's model once (e.g. inject LoRA); must be idempotent."""

    @abstractmethod
    def initial_state(self, trainer: Trainer) -> Payload:
        """Return the starting global state, computed from a prepared trainer."""

    @abstractmethod
    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Do the local work for ``task`` and return the update to send back.

        ``local_state`` belongs to this client across rounds; the strategy may change it in place
        and the host persists it after the call returns.
        """

    @abstractmethod
    def load_global(self, state: Payload, trainer: Trainer) -> None:
        """Put the global model described by ``state`` (from ``global_state``) into the trainer."""

    def update_vector(self, task: Payload, reply: Payload, trainer: Trainer) -> torch.Tensor | None:
        """Return ``reply`` as the server half's ``update_vector`` measures it, on the device.

        Secure aggregation needs this: the vector then leaves the device only masked, and the
        server learns the sum alone. It must equal the server half's vector for the same task
        and reply (a test holds every registered strategy to that); None means the reply
        carries no update (a resync request). The default says the strategy cannot.
        """
        raise NotImplementedError(f"{type(self).__name__} does not compute update vectors")

    def computes_vectors(self) -> bool:
        """Whether :meth:`update_vector` is implemented (secure aggregation is possible)."""
        return type(self).update_vector is not ClientStrategy.update_vector
