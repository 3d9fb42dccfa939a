"""Server half of ``fedkseed``: per-seed coefficients, weighted by examples, sent as deltas."""

from __future__ import annotations

import torch

from fedft.core.payload import MetricValue
from fedft.core.sampling import client_seed
from fedft.core.strategy import Result
from fedft.strategies.fedkseed.config import FedKSeedConfig
from fedft.strategies.seedpool.pool import step_indices
from fedft.strategies.seedpool.server_base import SeedServer


def check_steps(
    tensors: dict[str, torch.Tensor], seeds: int, steps: int, *, with_indices: bool
) -> str | None:
    """Return why a step list (g per step, plus seed indices if sampled) is malformed, or None."""
    expected = {"i", "g"} if with_indices else {"g"}
    if set(tensors) != expected:
        return f"expected tensors {sorted(expected)}, got {sorted(tensors)}"
    grads = tensors["g"]
    if grads.dtype != torch.float32 or grads.shape != (steps,):
        return f"g must be float32 of shape ({steps},), one value per local step"
    if not bool(torch.isfinite(grads).all()):
        return "g has NaN or Inf values"
    if with_indices:
        index = tensors["i"]
        if index.dtype not in (torch.int16, torch.int32) or index.shape != (steps,):
            return f"i must be int16/int32 of shape ({steps},)"
        if int(index.min()) < 0 or int(index.max()) >= seeds:
            return f"seed index outside [0, {seeds})"
    return None


class FedKSeedServer(SeedServer[FedKSeedConfig]):
    """FedKSeed's server: sums clients' scalar gradients per seed, weighted by examples.

    The global model is ``w0 - lr * sum_k G_k z_k``, i.e. exactly the example-weighted average of
    the clients' local models; it is stored as coefficients ``C_k = -lr * G_k``. The round is
    :class:`~fedft.core.strategy.LinearUpdates`' default aggregate over :meth:`update_vector`.
    """

    # FedKSeed's uniform step seeds are re-derived here from the task seed; Pro's are sent.
    sends_indices = False

    def check_tensors(self, result: Result) -> str | None:
        """Refuse step lists of the wrong length, dtype or range, or with NaN/Inf."""
        return check_steps(
            result.payload.tensors,
            self.config.seeds,
            self.config.local_steps,
            with_indices=self.sends_indices,
        )

    def _indices(self, server_round: int, result: Result) -> torch.Tensor:
        """Return the seed index of each of the result's steps."""
        if self.sends_indices:
            return result.payload.tensors["i"].to(torch.int64)
        seed = client_seed(self.seed, server_round, result.client_id)
        return step_indices(seed, self.config.local_steps, self.config.seeds)

    def update_size(self) -> int:
        """K: one scalar per pool seed."""
        return self._store().shape[0]

    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        """Minus the client's scalar gradients summed per seed (coefficients are lr times this).

        The per-seed importance of FedKSeed-Pro is not learned here: under DP it may only
        depend on noised aggregates, so seeds stay uniformly likely.
        """
        store = self._store()
        store.record_sync(result.client_id, int(result.payload.metrics["version"]))
        if not result.payload.tensors:
            return None  # a resync request
        index = self._indices(server_round, result)
        grads = result.payload.tensors["g"].to(torch.float64)
        return torch.zeros(store.shape[0], dtype=torch.float64).index_add_(0, index, -grads)

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        """Commit ``lr * mean`` as the next version's coefficient change."""
        store = self._store()
        added = torch.zeros(store.shape, dtype=torch.float64)
        added[:, 0] = mean.to(torch.float64) * self.config.lr
        store.commit(added, server_round)
        return {"seeds_touched": int((mean != 0).sum())}

    def round_tally(self) -> dict[str, MetricValue]:
        """Resync requests, and the local steps that moved the model (g != 0)."""
        return {**super().round_tally(), "steps": 0}

    def observe(
        self,
        server_round: int,
        result: Result,
        vector: torch.Tensor | None,
        tally: dict[str, MetricValue],
    ) -> None:
        """Count the update's non-zero steps (skipped steps carry g = 0)."""
        super().observe(server_round, result, vector, tally)
        if vector is not None:
            tally["steps"] = int(tally["steps"]) + int((result.payload.tensors["g"] != 0).sum())
