"""Rows of the coordinator's state, as plain frozen dataclasses shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Times are Unix seconds as floats everywhere in the state layer.

ROUND_OPEN = "open"
ROUND_DONE = "done"


@dataclass(frozen=True)
class RunRecord:
    """The one federated run this coordinator drives: strategy, its config, seed, length."""

    run_id: str
    strategy: str
    config: dict[str, Any]
    seed: int
    rounds: int
    model: str
    created_at: float


@dataclass(frozen=True)
class TokenRecord:
    """A one-time enrollment token, stored only as its SHA-256 hex digest."""

    token_hash: str
    created_at: float
    expires_at: float | None = None
    note: str = ""
    used_at: float | None = None
    used_by: str | None = None


@dataclass(frozen=True)
class ClientRecord:
    """An enrolled client and the public key that verifies its requests."""

    client_id: str
    public_key: bytes
    enrolled_at: float
    last_seen: float
    num_examples: int = 0
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundRecord:
    """One round: open until its deadline or until every task was answered, then done."""

    round: int
    status: str
    started_at: float
    deadline: float
    closed_at: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskRecord:
    """Work assigned to one client in one round; the payload is its blobs, concatenated.

    Serialized protobuf messages merge when concatenated, so a task may be a blob shared by
    many tasks (the global tensors) followed by a small blob of its own (its config).
    """

    task_id: str
    round: int
    client_id: str
    payload_shas: tuple[str, ...]
    created_at: float
    # Under --mode async: the number the strategy knows this task by (its ``server_round``);
    # a task may then be answered in a later round than its own, until it is too stale.
    ticket: int | None = None


@dataclass(frozen=True)
class UpdateRecord:
    """An accepted update: durable (committed) before the client is acknowledged."""

    task_id: str
    round: int
    client_id: str
    payload_sha: str
    size: int
    received_at: float


@dataclass(frozen=True)
class TrafficRecord:
    """Serialized bytes of one RPC exchange with one client."""

    round: int
    client_id: str
    rpc: str
    bytes_up: int
    bytes_down: int
    at: float
    # The part of bytes_up / bytes_down that was payload (tensors and config) rather than framing.
    payload_up: int = 0
    payload_down: int = 0


@dataclass(frozen=True)
class NewUpdate:
    """An update to store, its payload, and the traffic of the call that carried it (if any)."""

    update: UpdateRecord
    data: bytes
    traffic: TrafficRecord | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """What one round spent in privacy terms; the audit composes these."""

    round: int
    mechanism: str
    noise_multiplier: float
    clip_norm: float
    sampling_rate: float
    participants: int
    adjacency: str
    recorded_at: float
    aggregation: str = "plain"  # "secagg": summed inside a secure sum (participants: survivors)
    l2_sensitivity: float = 0.0  # "skellam" (distributed DP): one client's bound in ring units
    l1_sensitivity: float = 0.0
