"""What the seed-based server halves share: versioned coefficients, tasks, checks, checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

from fedft.core.payload import ConfigValue, MetricValue, Payload
from fedft.core.sampling import client_seed
from fedft.core.strategy import ClientInfo, LinearUpdates, Result, Task
from fedft.strategies.seedpool.coefficients import CoefficientStore
from fedft.strategies.seedpool.config import SeedPoolConfig
from fedft.strategies.seedpool.wire import encode_delta

SeedConfigT = TypeVar("SeedConfigT", bound=SeedPoolConfig)


class SeedServer(LinearUpdates[SeedConfigT]):
    """Keeps the global model as coefficients and sends each client only what it is missing.

    Subclasses say what a well-formed update is (:meth:`check_tensors`) and, as
    :class:`LinearUpdates`, how one update becomes a vector and how a mean vector becomes new
    coefficients; the round itself is ``LinearUpdates``' default ``aggregate``.
    """

    # Per-seed sums of directional derivatives reach the hundreds, and the vector is a few
    # kilobytes: a wide clip in the 64-bit ring keeps ~28 fractional bits at 1,000 clients.
    secagg_clip = 1e4
    secagg_ring_bits = 64

    def __init__(self, config: SeedConfigT, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.store: CoefficientStore | None = None

    def _store(self) -> CoefficientStore:
        if self.store is None:
            raise RuntimeError("initialize() or load_state_dict() must run before this")
        return self.store

    def initialize(self, initial: Payload) -> None:
        """Start from the pretrained model (all coefficients zero) with the clients' blocks."""
        ends = initial.tensors.get("ends")
        if ends is None or ends.dim() != 1 or ends.numel() < 1:
            raise ValueError("the initial state must describe the parameter blocks ('ends')")
        self.store = CoefficientStore((self.store_rows(), int(ends.numel())))

    def store_rows(self) -> int:
        """Rows of the coefficient matrix: one per pool seed (subclasses may add a scale row)."""
        return self.config.seeds

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Sample clients; each gets its task seed and the coefficients it is missing."""
        store = self._store()
        cfg = self.config
        chosen = cfg.sample(clients, seed=self.seed, server_round=server_round)
        extra = self.extra_tensors(server_round)
        # Clients at the same version get the same delta: compute and encode it once per base.
        encoded: dict[int, dict[str, torch.Tensor]] = {}
        tasks = []
        for client in chosen:
            base = store.base_for(client.client_id)
            if base not in encoded:
                encoded[base] = encode_delta(store.delta_since(base))
            config: dict[str, ConfigValue] = {
                "seed": client_seed(self.seed, server_round, client.client_id),
                "base": base,
                "target": store.version,
            }
            payload = Payload(tensors={**encoded[base], **extra}, config=config)
            tasks.append(Task(client.client_id, payload))
        return tasks

    def keep_versions(self, count: int) -> None:
        """Keep the newest ``count`` snapshots, so a stale client's version is still known.

        The update vectors themselves are per-seed scalars, relative to whatever version the
        client trained from; only the client's next delta needs its version's coefficients.
        """
        self._store().keep = max(count, 0)

    def extra_tensors(self, server_round: int) -> dict[str, torch.Tensor]:
        """Tensors every task of the round carries besides the delta (none by default)."""
        return {}

    def check_update(self, server_round: int, result: Result) -> str | None:
        """Refuse malformed updates; an empty update with version 0 asks for a full sync."""
        weight = result.payload.metrics.get("num_examples", 0)
        if not (isinstance(weight, int) and weight > 0):
            return f"num_examples must be a positive int, got {weight!r}"
        version = result.payload.metrics.get("version")
        if not isinstance(version, int):
            return "the update must say which version it was trained from"
        if not result.payload.tensors and version == 0:
            return None
        if not self._store().holds(version):
            return f"version {version} is unknown"
        return self.check_tensors(result)

    def update_weight(self, result: Result) -> float:
        """Every client counts the same with ``equal_weight``, else by its example count."""
        return 1.0 if self.config.equal_weight else super().update_weight(result)

    def check_tensors(self, result: Result) -> str | None:
        """Return why the update's tensors are malformed, or None (subclasses override)."""
        return None

    def round_tally(self) -> dict[str, MetricValue]:
        """Every round reports its resync requests (empty updates with version 0)."""
        return {"resyncs": 0}

    def observe(
        self,
        server_round: int,
        result: Result,
        vector: torch.Tensor | None,
        tally: dict[str, MetricValue],
    ) -> None:
        """Count resync requests: ``update_vector`` returns None for them."""
        if vector is None:
            tally["resyncs"] = int(tally["resyncs"]) + 1

    def note_public(self, server_round: int, result: Result) -> None:
        """Under secure aggregation the client's synced version still comes in the clear."""
        version = result.payload.metrics.get("version")
        if isinstance(version, int):
            self._store().record_sync(result.client_id, version)

    def global_state(self) -> Payload:
        """Return the full coefficients (what a fresh evaluator replays from w0)."""
        return Payload(tensors={"coeffs": self._store().current.clone()})

    def state_dict(self) -> Payload:
        """Checkpoint: coefficients, snapshots and every client's synced version."""
        return self._store().to_payload()

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`."""
        self.store = CoefficientStore.from_payload(state)
