"""Configuration of the ``legend`` strategy."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import option
from fedft.strategies.hetero_base.exact import ExactConfig


@dataclass(frozen=True)
class LegendConfig(ExactConfig):
    """Per-device LoRA depth and rising rank profile, exact aggregation, SVD redistribution."""

    min_depth: int = option(1, "fewest top layers a device keeps LoRA on")
    balance: float = option(
        0.1, "stop shrinking stragglers once the slowest predicted round <= (1+balance) x median"
    )

    def checks(self) -> list[tuple[bool, str]]:
        """The exact-aggregation checks plus the depth's and the balance's."""
        return [
            *super().checks(),
            (self.min_depth >= 1, "min_depth must be >= 1"),
            (self.balance >= 0, "balance must be >= 0"),
        ]
