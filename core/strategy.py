"""The strategy plugin API: a server half and a client half, written once, run by every host."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic

import torch

from fedft.core.config import ConfigT
from fedft.core.payload import ConfigValue, MetricValue, Payload
from fedft.core.trainer import Trainer


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

        ``results`` may be a one-pass iterable (the coordinator streams them from its state
        store), so implementations must not need to hold all of them at once.
        """

    def check_update(self, server_round: int, result: Result) -> str | None:
        """Say why an update cannot be aggregated (wrong names, shapes, dtypes...), or None.

        Hosts call this before they accept and store an update, so a bad update is refused at
        the door rather than discarded at aggregation time. The default accepts everything.
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


class LinearUpdates(ABC):
    """Optional hook for a server half whose round is "global += mean of per-client vectors".

    Wrappers that must see each client's update as one vector (the DP wrapper clips and noises
    it, the privacy audit inserts canaries into it) use these methods *instead of*
    ``aggregate``, so hosts and wrappers stay free of strategy-specific code. The vector lives
    in the strategy's trainable space (LoRA: the adapter delta; FedKSeed: one scalar per seed;
    Ferret: one coefficient per (seed, block)) and is, up to a fixed positive factor the strategy
    documents (e.g. a learning rate), the change the client's update asks of the global model.
    """

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
