"""Options every seed-based strategy has: the pool, the perturbation kind, what is tuned."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import ConfigError, option
from fedft.core.rng import KINDS
from fedft.core.trainer import LoraSpec
from fedft.strategies.options import ALL_LINEAR, SamplingOptions
from fedft.strategies.seedpool.trainable import TRAINABLE_HELP, check_trainable


@dataclass(frozen=True)
class SeedPoolConfig(SamplingOptions):
    """The shared part of the seed-based strategies' configs; subclasses add their own."""

    seeds: int = option(4096, "K, the number of candidate seeds shared by all clients")
    pool_seed: int = option(42, "seed from which the K candidate seeds are derived")
    kind: str = option("irwin_hall", "perturbation distribution: irwin_hall or rademacher")
    trainable: str = option("all", TRAINABLE_HELP)
    lora_rank: int = option(8, "LoRA rank when trainable='lora'")
    equal_weight: bool = option(
        False,
        "weight clients equally (the paper's 1/N; --equal_weight in the reference scripts) "
        "instead of by example count",
    )

    def checks(self) -> list[tuple[bool, str]]:
        """Return (condition, message) pairs; subclasses extend the list."""
        return [
            (1 <= self.seeds <= 1 << 20, "seeds must be in [1, 2^20]"),
            (0 <= self.pool_seed < 1 << 64, "pool_seed must be in [0, 2^64)"),
            (self.kind in KINDS, f"kind must be one of {', '.join(KINDS)}"),
            (self.lora_rank >= 1, "lora_rank must be >= 1"),
            *super().checks(),
        ]

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = check_trainable(self.trainable)
        if problem is not None:
            raise ConfigError(f"{type(self).__name__}: {problem}")

    def lora_spec(self) -> LoraSpec | None:
        """Return the adapters to add when tuning LoRA parameters only, else None."""
        if self.trainable != "lora":
            return None
        return LoraSpec(rank=self.lora_rank, alpha=2 * self.lora_rank, target_modules=ALL_LINEAR)
