"""Configuration of ``fedkseed_pro``: FedKSeed's options plus the seed-importance clip."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import option
from fedft.strategies.fedkseed.config import FedKSeedConfig


@dataclass(frozen=True)
class FedKSeedProConfig(FedKSeedConfig):
    """FedKSeed with probability-differentiated seed sampling."""

    bias_loss_clip: float = option(
        1000.0, "|g| values are clipped to this before they score a seed's importance"
    )

    def checks(self) -> list[tuple[bool, str]]:
        """FedKSeed's checks plus the clip's."""
        return [*super().checks(), (self.bias_loss_clip > 0, "bias_loss_clip must be > 0")]
