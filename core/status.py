"""A run's status as plain data: what ``fedft status`` shows, whether read from a DB or a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at run time: `fedft status --help` must start fast
    from fedft.core.payload import MetricValue


@dataclass(frozen=True)
class RoundStatus:
    """One round: progress, bytes and the strategy's metrics."""

    round: int
    status: str
    tasks: int
    updates: int
    bytes_up: int
    bytes_down: int
    metrics: dict[str, MetricValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientStatus:
    """One enrolled client and whether it counts as alive."""

    client_id: str
    last_seen: float
    num_examples: int
    alive: bool


@dataclass(frozen=True)
class RunStatus:
    """The whole run."""

    run_id: str
    strategy: str
    model: str
    rounds_total: int
    current_round: int
    finished: bool
    rounds: list[RoundStatus] = field(default_factory=list)
    clients: list[ClientStatus] = field(default_factory=list)
