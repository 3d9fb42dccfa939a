"""Configuration of ``fedkseed_pro``: FedKSeed's options plus the seed-importance clip."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import Preset, option
from fedft.strategies.fedkseed.config import PAPER as FEDKSEED_PAPER
from fedft.strategies.fedkseed.config import FedKSeedConfig

PAPER = Preset(
    values={**FEDKSEED_PAPER.values, "bias_loss_clip": 1000.0},
    source=FEDKSEED_PAPER.source + " with --bias_sampling --bias_loss_clip 1000 --grad_initial 0",
    unmatched=FEDKSEED_PAPER.unmatched,
)


@dataclass(frozen=True)
class FedKSeedProConfig(FedKSeedConfig):
    """FedKSeed with probability-differentiated seed sampling."""

    bias_loss_clip: float = option(
        1000.0, "|g| values are clipped to this before they score a seed's importance"
    )

    @classmethod
    def presets(cls) -> dict[str, Preset]:
        """``paper``: FedKSeed's reference hyperparameters with the Pro sampling flags."""
        return {"paper": PAPER}

    def checks(self) -> list[tuple[bool, str]]:
        """FedKSeed's checks plus the clip's."""
        return [*super().checks(), (self.bias_loss_clip > 0, "bias_loss_clip must be > 0")]
