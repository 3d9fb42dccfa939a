"""Options shared by the strategies whose devices train LoRA of different ranks and depths."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import option
from fedft.core.trainer import LoraSpec
from fedft.strategies.options import LoRATrainingOptions


@dataclass(frozen=True)
class HeteroLoRAConfig(LoRATrainingOptions):
    """LoRA bounds, local training and sampling; each device's layout is planned per round."""

    max_rank: int = option(8, "largest LoRA rank any device trains (the top layers of fast ones)")
    min_rank: int = option(2, "smallest LoRA rank any device trains")

    def checks(self) -> list[tuple[bool, str]]:
        """The rank bounds, then the shared LoRA training checks."""
        return [
            (1 <= self.min_rank <= self.max_rank, "need 1 <= min_rank <= max_rank"),
            *super().checks(),
        ]

    def global_adapter_rank(self) -> int:
        """Rank of the global adapter (evaluation, export, the initial A every rank slices)."""
        return self.max_rank

    def global_spec(self) -> LoraSpec:
        """The full-depth adapter that holds the global model on every host."""
        return LoraSpec(
            rank=self.global_adapter_rank(),
            alpha=self.alpha,
            dropout=self.dropout,
            target_modules=self.target_modules,
        )
