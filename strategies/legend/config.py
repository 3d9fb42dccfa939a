"""Configuration of the ``legend`` strategy."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import option
from fedft.strategies.hetero_lora.config import HeteroLoRAConfig


@dataclass(frozen=True)
class LegendConfig(HeteroLoRAConfig):
    """Per-device LoRA depth and rising rank profile, exact aggregation, SVD redistribution."""

    min_depth: int = option(1, "fewest top layers a device keeps LoRA on")
    balance: float = option(
        0.1, "stop shrinking stragglers once the slowest predicted round <= (1+balance) x median"
    )
    global_rank: int = option(
        64, "rank of the exported/evaluated global adapter (best rank-k of the exact aggregate)"
    )

    def checks(self) -> list[tuple[bool, str]]:
        """The heterogeneous-LoRA checks plus the depth, balance and global rank."""
        return [
            *super().checks(),
            (self.min_depth >= 1, "min_depth must be >= 1"),
            (self.balance >= 0, "balance must be >= 0"),
            (self.global_rank >= self.max_rank, "global_rank must be >= max_rank"),
        ]

    def global_adapter_rank(self) -> int:
        """Rank of the global adapter: ``global_rank``."""
        return self.global_rank
