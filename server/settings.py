"""How the coordinator runs rounds: their number, deadlines, liveness window and size limits."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.chunking import DEFAULT_CHUNK_BYTES


@dataclass(frozen=True)
class CoordinatorSettings:
    """How rounds are run: length, deadlines, who counts as alive, limits."""

    rounds: int
    round_timeout_s: float = 600.0
    min_clients: int = 1
    liveness_s: float = 60.0
    heartbeat_interval_s: float = 10.0
    max_update_bytes: int = 1 << 30
    restart_grace_s: float = 30.0
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    # The most examples one update may claim (its aggregation weight); the client's enrolled
    # profile, when it reported one, caps it further.
    max_num_examples: int = 1_000_000
    # Largest L2 norm of an update's change to the global model (LinearUpdates strategies).
    max_update_norm: float | None = None

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if self.round_timeout_s <= 0 or self.liveness_s <= 0 or self.heartbeat_interval_s <= 0:
            raise ValueError("timeouts must be > 0")
        if self.max_num_examples < 1:
            raise ValueError("max_num_examples must be >= 1")
        if self.max_update_norm is not None and not self.max_update_norm > 0:
            raise ValueError("max_update_norm must be > 0")
        if self.min_clients < 1:
            raise ValueError("min_clients must be >= 1")
