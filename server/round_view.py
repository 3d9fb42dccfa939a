"""What a closed round left in the coordinator's state, read back for reports (the grpc engine).

Readers outside the server (the grpc simulation engine watches the coordinator's database) get
the round through this module, so they need to know neither how the coordinator stores blobs
nor which of a round's metrics are its own bookkeeping rather than the strategy's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedft.core.device import CUDA_PROPERTY
from fedft.core.payload import MetricValue, Payload
from fedft.core.serde import payload_from_bytes
from fedft.core.wrapper import without_prefix
from fedft.server.state.base import State
from fedft.strategies.buffered import STATE_PREFIX

# Round metrics the coordinator adds beside the strategy's own (REJECTED is shared by all hosts).
UPDATES, MISSING = "updates", "missing"
COORDINATOR_COUNTERS = (UPDATES, MISSING)


@dataclass(frozen=True)
class RoundView:
    """One closed round: timing, payload traffic, the strategy's metrics and each reply's."""

    round: int
    seconds: float
    participants: int
    bytes_up: int  # payload bytes (tensors and config), as every engine counts them
    bytes_down: int
    metrics: dict[str, MetricValue]
    # Per client that was sent a task: the metrics of its accepted reply ({} when none arrived)
    # and the payload bytes it moved.
    replies: dict[str, dict[str, MetricValue]] = field(default_factory=dict)
    client_bytes: dict[str, int] = field(default_factory=dict)
    # "cuda" or "cpu" for each client whose profile says where it trains.
    devices: dict[str, str] = field(default_factory=dict)
    # --mode async: versions between each reply's task and this one.
    staleness: dict[str, int] = field(default_factory=dict)


def round_view(state: State, number: int) -> RoundView:
    """Read closed round ``number``; ValueError if it is not closed."""
    record = state.get_round(number)
    if record is None or record.closed_at is None:
        raise ValueError(f"round {number} is not closed")
    traffic = state.list_traffic(number)
    tasks = state.tasks_for_round(number)
    replies: dict[str, dict[str, MetricValue]] = {t.client_id: {} for t in tasks}
    updates = state.updates_for_round(number)
    staleness: dict[str, int] = {}
    for update in updates:
        replies[update.client_id] = dict(
            payload_from_bytes(state.get_blob(update.payload_sha)).metrics
        )
        task = state.get_task(update.task_id)
        if task is not None and task.ticket is not None:  # --mode async: a task of any round
            staleness[update.client_id] = number - task.round
    # Every client sent a task or (--mode async) a reply that joined this round.
    moved: dict[str, int] = dict.fromkeys(replies, 0)
    for t in traffic:
        if t.client_id in moved:
            moved[t.client_id] += t.payload_up + t.payload_down
    return RoundView(
        round=number,
        seconds=round(record.closed_at - record.started_at, 3),
        # Asynchronous: the updates the version applied; synchronous: the tasks sent.
        participants=len(updates) if staleness else len(tasks),
        bytes_up=sum(t.payload_up for t in traffic),
        bytes_down=sum(t.payload_down for t in traffic),
        metrics={
            k: v
            for k, v in record.metrics.items()
            if isinstance(v, (int, float)) and k not in COORDINATOR_COUNTERS
        },
        replies=replies,
        client_bytes=moved,
        devices={
            c.client_id: "cuda" if c.properties[CUDA_PROPERTY] else "cpu"
            for c in state.list_clients()
            if CUDA_PROPERTY in c.properties and c.client_id in moved
        },
        staleness=staleness,
    )


def checkpoint_at(state: State, number: int) -> Payload:
    """The server half's checkpoint after round ``number`` (0: the initial one)."""
    # Without the host's own entries (--mode async), which no strategy knows how to load.
    return without_prefix(payload_from_bytes(state.get_checkpoint(number)), STATE_PREFIX)
