"""Server half of ``ferret``: per-(seed, block) coefficients, averaged over clients."""

from __future__ import annotations

import torch

from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import Result
from fedft.strategies.ferret.config import FerretConfig
from fedft.strategies.ferret.projection import projection_vector, reference_scale
from fedft.strategies.seedpool.server_base import SeedServer


def check_projection(result: Result, shape: tuple[int, int]) -> str | None:  # noqa: PLR0911
    """Return why a (seed index, block, coefficient) update is malformed, or None."""
    tensors = result.payload.tensors
    if set(tensors) != {"i", "b", "c"}:
        return f"expected tensors i, b and c, got {sorted(tensors)}"
    index, block, coeff = tensors["i"], tensors["b"], tensors["c"]
    for name, t, limit in (("i", index, shape[0]), ("b", block, shape[1])):
        if t.dtype not in (torch.int16, torch.int32) or t.dim() != 1:
            return f"{name} must be a 1-d int16/int32 tensor"
        if t.shape != coeff.shape:
            return f"{name} must have one entry per coefficient"
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= limit):
            return f"{name} has entries outside [0, {limit})"
    if coeff.dtype != torch.float32:
        return "c must be float32"
    if not bool(torch.isfinite(coeff).all()):
        return "c has NaN or Inf values"
    flat = index.to(torch.int64) * shape[1] + block.to(torch.int64)
    if torch.unique(flat).numel() != flat.numel():
        return "a (seed, block) pair appears twice"
    return None


class FerretServer(SeedServer[FerretConfig]):
    """Ferret's server: the global model is w0 + sum C[k, l] z_k|block_l, updated each round.

    The round is :class:`~fedft.core.strategy.LinearUpdates`' default aggregate: the weighted
    mean of the clients' negated projections, times ``server_lr``, added to ``C``. Clients
    always send unbiased coefficients; ``scaling=reference`` is applied here, so a client cannot
    tell the two modes apart.
    """

    block_sizes: torch.Tensor | None = None

    def async_problem(self) -> str | None:
        """A server-lr schedule counts rounds; asynchronous numbers count dispatches too."""
        if self.config.server_lr_schedule != "constant":
            return (
                f"server_lr_schedule={self.config.server_lr_schedule} anneals over synchronous "
                "rounds; use --mode sync or server_lr_schedule=constant"
            )
        return None

    def check_tensors(self, result: Result) -> str | None:
        """Refuse malformed (seed, block, coefficient) triples."""
        return check_projection(result, self._store().shape)

    def update_size(self) -> int:
        """K x L: one coefficient per (seed, block)."""
        rows, cols = self._store().shape
        return rows * cols

    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        """Minus the client's projections, flattened (seed, block) row-major.

        The model's coefficients change by ``server_lr`` times the mean of these.
        """
        store = self._store()
        store.record_sync(result.client_id, int(result.payload.metrics["version"]))
        if not result.payload.tensors:
            return None  # a resync request
        t = result.payload.tensors
        return projection_vector(t["i"], t["b"], t["c"], *store.shape)

    def initialize(self, initial: Payload) -> None:
        """Keep the blocks' sizes too: the per-basis clip measures vectors with them."""
        super().initialize(initial)
        ends = initial.tensors["ends"].to(torch.int64)
        self.block_sizes = torch.diff(ends, prepend=torch.zeros(1, dtype=torch.int64))

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        """Commit ``server_lr * mean`` (scheduled, clipped per basis) as the next change.

        With ``scaling=reference`` each block's coefficients are first scaled by ``d_l rho_l``
        (the reference code's reconstruction relative to ours), clipped, and only then
        multiplied by the server lr, in the reference's order.
        """
        store = self._store()
        cfg = self.config
        lr = cfg.server_lr_at(server_round)
        coeffs = mean.to(torch.float64).reshape(store.shape)
        metrics: dict[str, MetricValue] = {"bases": int((mean != 0).sum())}
        if cfg.scaling == "reference":
            scaled = coeffs * reference_scale(self._sizes("scaling=reference"))
            added = self._clip(scaled, metrics) * lr
        else:
            added = self._clip(coeffs * lr, metrics)
        store.commit(added, server_round)
        return metrics

    def _sizes(self, needed_by: str) -> torch.Tensor:
        """The blocks' sizes, which checkpoints older than the per-basis clip lack."""
        if self.block_sizes is None:
            raise RuntimeError(f"{needed_by} needs the block sizes: restore a newer checkpoint")
        return self.block_sizes

    def _clip(self, added: torch.Tensor, metrics: dict[str, MetricValue]) -> torch.Tensor:
        """Cap each (seed, block) vector ``c z`` at ``basis_clip`` (if on), counting clips."""
        if self.config.basis_clip <= 0:
            return added
        # |c z| over block l is |c| sqrt(d_l) for a unit-variance basis: cap it per entry.
        limit = self.config.basis_clip / self._sizes("basis_clip").to(torch.float64).sqrt()
        clipped = added.abs() > limit
        metrics["clipped_bases"] = int(clipped.sum())
        return torch.where(clipped, added.sign() * limit, added)

    def state_dict(self) -> Payload:
        """The coefficient store plus the block sizes."""
        state = super().state_dict()
        if self.block_sizes is not None:
            state.tensors["block_sizes"] = self.block_sizes.clone()
        return state

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict` (older checkpoints carry no block sizes)."""
        super().load_state_dict(state)
        sizes = state.tensors.get("block_sizes")
        self.block_sizes = None if sizes is None else sizes.to(torch.int64).clone()
