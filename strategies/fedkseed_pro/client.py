"""Client half of ``fedkseed_pro``: FedKSeed steps with seeds drawn by importance."""

from __future__ import annotations

import torch

from fedft.core.payload import Payload, config_int
from fedft.strategies.fedkseed.client import FedKSeedClient
from fedft.strategies.fedkseed_pro.scores import probabilities
from fedft.strategies.seedpool.replay import Geometry
from fedft.strategies.seedpool.wire import index_dtype


class FedKSeedProClient(FedKSeedClient):
    """Draws each step's seed from the server's importance distribution."""

    def _sample(self, task: Payload, geometry: Geometry) -> torch.Tensor:
        """Sample seed indices with replacement, p = softmax(levels / 255)."""
        levels = task.tensors.get("p")
        size = len(geometry.seeds)
        if levels is None or levels.dtype != torch.uint8 or levels.shape != (size,):
            raise ValueError(
                f"a fedkseed_pro task needs uint8 importance levels of shape ({size},)"
            )
        generator = torch.Generator().manual_seed(config_int(task.config, "seed"))
        return torch.multinomial(
            probabilities(levels), self.config.local_steps, replacement=True, generator=generator
        )

    def _update_tensors(
        self, indices: torch.Tensor, grads: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Sampled indices cannot be re-derived by the server, so they go up with the g."""
        return {"i": indices.to(index_dtype(self.config.seeds)), "g": grads}
