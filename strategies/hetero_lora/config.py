"""Options shared by the strategies whose devices train LoRA of different ranks and depths."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import ConfigError, StrategyConfig, option
from fedft.core.trainer import LoraSpec
from fedft.strategies.fedavg_lora.config import ALL_LINEAR


@dataclass(frozen=True)
class HeteroLoRAConfig(StrategyConfig):
    """LoRA bounds, local training and sampling; each device's layout is planned per round."""

    max_rank: int = option(8, "largest LoRA rank any device trains (the top layers of fast ones)")
    min_rank: int = option(2, "smallest LoRA rank any device trains")
    alpha: int = option(16, "LoRA alpha; each module is scaled by alpha / its rank (PEFT)")
    dropout: float = option(0.0, "dropout on the LoRA input during local training")
    target_modules: tuple[str, ...] = option(
        ALL_LINEAR, "module names that receive adapters (comma-separated on the command line)"
    )
    local_steps: int = option(10, "AdamW steps each sampled client runs per round")
    batch_size: int = option(8, "examples per local step")
    lr: float = option(1e-3, "learning rate of local AdamW")
    fraction: float = option(1.0, "fraction of available clients sampled each round, in (0, 1]")
    min_clients: int = option(1, "a round starts only with at least this many clients")

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.min_rank <= self.max_rank, "need 1 <= min_rank <= max_rank"),
            (self.alpha > 0, "alpha must be > 0"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (len(self.target_modules) > 0, "target_modules must not be empty"),
            (self.local_steps >= 1, "local_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 < self.fraction <= 1.0, "fraction must be in (0, 1]"),
            (self.min_clients >= 1, "min_clients must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{type(self).__name__}: {message}")

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
