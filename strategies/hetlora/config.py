"""Configuration of the ``hetlora`` strategy."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.strategies.hetero_lora.config import HeteroLoRAConfig


@dataclass(frozen=True)
class HetLoRAConfig(HeteroLoRAConfig):
    """One rank per device (from its speed), every layer, zero-padded norm-weighted averaging."""
