"""Configuration of the ``fedavg_lora`` strategy."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core import LoraSpec, option
from fedft.strategies.options import ALL_LINEAR, LoRATrainingOptions

__all__ = ["ALL_LINEAR", "FedAvgLoRAConfig"]


@dataclass(frozen=True)
class FedAvgLoRAConfig(LoRATrainingOptions):
    """LoRA shape, local training and sampling for FedAvg over adapters."""

    rank: int = option(8, "LoRA rank r of every adapted module")

    def checks(self) -> list[tuple[bool, str]]:
        """The shared LoRA training checks plus the rank's."""
        return [(self.rank >= 1, "rank must be >= 1"), *super().checks()]

    def lora_spec(self) -> LoraSpec:
        """Return the adapter layout every client injects."""
        return LoraSpec(
            rank=self.rank,
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
        )
