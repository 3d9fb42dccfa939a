"""Option groups several strategies share: client sampling, and LoRA with local AdamW training.

Each group is a frozen-dataclass base class; a strategy's config inherits the groups it uses and
extends :meth:`SamplingOptions.checks` with its own conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import ConfigError, StrategyConfig, option

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class SamplingOptions(StrategyConfig):
    """Which clients take part in a round."""

    fraction: float = option(1.0, "fraction of available clients sampled each round, in (0, 1]")
    min_clients: int = option(1, "a round starts only with at least this many clients")

    def checks(self) -> list[tuple[bool, str]]:
        """Return (condition, message) pairs; subclasses extend the list."""
        return [
            (0.0 < self.fraction <= 1.0, "fraction must be in (0, 1]"),
            (self.min_clients >= 1, "min_clients must be >= 1"),
        ]

    def __post_init__(self) -> None:
        for ok, message in self.checks():
            if not ok:
                raise ConfigError(f"{type(self).__name__}: {message}")


@dataclass(frozen=True)
class LoRATrainingOptions(SamplingOptions):
    """LoRA scaling and targets, and the local AdamW steps every sampled client runs."""

    alpha: int = option(16, "LoRA alpha; adapters are scaled by alpha / rank")
    dropout: float = option(0.0, "dropout on the LoRA input during local training")
    target_modules: tuple[str, ...] = option(
        ALL_LINEAR, "module names that receive adapters (comma-separated on the command line)"
    )
    local_steps: int = option(10, "AdamW steps each sampled client runs per round")
    batch_size: int = option(8, "examples per local step")
    lr: float = option(1e-3, "learning rate of local AdamW")

    def checks(self) -> list[tuple[bool, str]]:
        """The sampling checks plus those of the LoRA and training options."""
        return [
            *super().checks(),
            (self.alpha > 0, "alpha must be > 0"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (len(self.target_modules) > 0, "target_modules must not be empty"),
            (self.local_steps >= 1, "local_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
        ]
