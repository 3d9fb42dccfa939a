"""Configuration of the ``hetlora`` strategy."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import option
from fedft.strategies.hetero_base.config import HeteroLoRAConfig


@dataclass(frozen=True)
class HetLoRAConfig(HeteroLoRAConfig):
    """One rank per device (from its speed), every layer, zero-padded norm-weighted averaging."""

    prune_gamma: float = option(
        0.0,
        "rank self-pruning (HetLoRA): when the norm of a device's last gamma*r rank components "
        "(|B tail| |A tail|, summed over modules) shrank in its local training, its rank is "
        "capped at floor((1-gamma) r) from then on; 0: off (HetLoRA's reference code: 0.01)",
    )

    def checks(self) -> list[tuple[bool, str]]:
        """The heterogeneous-LoRA checks plus the pruning fraction's."""
        return [*super().checks(), (0.0 <= self.prune_gamma < 1.0, "prune_gamma must be in [0, 1)")]
