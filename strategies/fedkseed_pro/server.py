"""Server half of ``fedkseed_pro``: FedKSeed plus per-seed |g| history for the sampling."""

from __future__ import annotations

import torch

from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import Result
from fedft.strategies.fedkseed.server import FedKSeedServer
from fedft.strategies.fedkseed_pro.config import FedKSeedProConfig
from fedft.strategies.fedkseed_pro.scores import importance_levels


class FedKSeedProServer(FedKSeedServer):
    """Learns which seeds matter from the clients' scalar gradients and sends their levels."""

    def __init__(self, config: FedKSeedProConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.clip = config.bias_loss_clip
        self.abs_sum = torch.zeros(config.seeds, dtype=torch.float64)
        self.counts = torch.zeros(config.seeds, dtype=torch.float64)

    sends_indices = True

    def observe(
        self,
        server_round: int,
        result: Result,
        vector: torch.Tensor | None,
        tally: dict[str, MetricValue],
    ) -> None:
        """Add each step's clipped |g| to its seed's history (skipped steps carry g = 0).

        Only the plain aggregate calls this: under DP, importance may not learn from one client.
        """
        super().observe(server_round, result, vector, tally)
        if vector is None:
            return
        index = result.payload.tensors["i"].to(torch.int64)
        grads = result.payload.tensors["g"].to(torch.float64)
        taken = grads != 0
        index, grads = index[taken], grads[taken]
        self.abs_sum.index_add_(0, index, grads.clamp(-self.clip, self.clip).abs())
        self.counts.index_add_(0, index, torch.ones_like(grads))

    def extra_tensors(self, server_round: int) -> dict[str, torch.Tensor]:
        """Every task carries the seeds' importance levels (K bytes)."""
        return {"p": importance_levels(self.abs_sum, self.counts)}

    def state_dict(self) -> Payload:
        """FedKSeed's checkpoint plus the |g| history."""
        state = super().state_dict()
        state.tensors["pro.abs_sum"] = self.abs_sum.clone()
        state.tensors["pro.counts"] = self.counts.clone()
        return state

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`."""
        super().load_state_dict(state)
        self.abs_sum = state.tensors["pro.abs_sum"].to(torch.float64).clone()
        self.counts = state.tensors["pro.counts"].to(torch.float64).clone()
