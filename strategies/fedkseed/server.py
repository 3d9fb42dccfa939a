"""Server half of ``fedkseed``: per-seed coefficients, weighted by examples, sent as deltas."""

from __future__ import annotations

import torch

from fedft.core.payload import MetricValue, Payload
from fedft.core.sampling import client_seed
from fedft.core.strategy import Result
from fedft.strategies.fedkseed.config import FedKSeedConfig
from fedft.strategies.fedkseed.decay import coefficient_change, decays, update_vector
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
    With weight decay the decayed block is ``a * (w0 + sum_k C_k z_k)`` and the matrix has a
    row for ``ln a`` (:mod:`fedft.strategies.fedkseed.decay`); it is still that average.
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

    def store_rows(self) -> int:
        """K, plus the row of log block scales when decaying."""
        return self.config.seeds + int(decays(self.config))

    def initialize(self, initial: Payload) -> None:
        """Start from the pretrained model; decay allows a decayed and an exempt block."""
        super().initialize(initial)
        blocks = self._store().shape[1]
        if decays(self.config) and blocks > 2:
            raise ValueError(f"with weight decay the client describes 1 or 2 blocks, not {blocks}")

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`; refuse a checkpoint of the other decay setting."""
        super().load_state_dict(state)
        rows = self._store().shape[0]
        if rows != self.store_rows():
            raise ValueError(
                f"the checkpoint has {rows} coefficient rows, this configuration needs "
                f"{self.store_rows()} (weight_decay={self.config.weight_decay:g}): "
                "a run cannot switch weight decay on or off"
            )

    def async_problem(self) -> str | None:
        """Weight decay's scaled frame assumes every update starts from the current version."""
        if decays(self.config):
            return (
                "with weight_decay > 0 a round's updates must all start from one version "
                "(the decay scale); use --mode sync or weight_decay=0"
            )
        return None

    def update_size(self) -> int:
        """K: one scalar per pool seed (2K when decaying with an exempt block)."""
        if not decays(self.config):
            return self.config.seeds
        return self.config.seeds * self._store().shape[1]

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
        grads = result.payload.tensors["g"]
        return update_vector(self.config, index, grads, store.shape[1])

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        """Commit ``lr * mean`` as the next version's coefficient change.

        With decay, the decayed block's scale shrinks by ``rho^tau`` and its half of the mean
        is divided by the new scale (``coefficient_change``).
        """
        store = self._store()
        if decays(self.config):
            blocks = store.shape[1]
            log_scale = float(store.current[self.config.seeds, 0])
            added = coefficient_change(self.config, mean, log_scale, blocks)
        else:
            added = torch.zeros(store.shape, dtype=torch.float64)
            added[:, 0] = mean.to(torch.float64) * self.config.lr
        store.commit(added, server_round)
        touched = mean.reshape(-1, self.config.seeds) != 0
        return {"seeds_touched": int(touched.any(dim=0).sum())}

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
