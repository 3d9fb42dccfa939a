"""What a host hands the assembly point: the run's strategy, model, device and wrappers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedft.core.config import ConfigError, StrategyConfig
from fedft.core.device import check_device_name
from fedft.core.errors import UsageError
from fedft.core.registry import StrategySpec, get_strategy
from fedft.core.run_options import AUTOCAST_CHOICES

if TYPE_CHECKING:  # the privacy stack (cryptography, dp-accounting) loads only when DP is asked
    from fedft.privacy.config import DPConfig, LocalDPConfig
    from fedft.privacy.robust import RobustConfig
    from fedft.privacy.secagg.settings import SecAggSettings


@dataclass(frozen=True)
class RunSpec:
    """What a host needs to assemble a run, whichever engine or daemon it is."""

    strategy: str
    options: Mapping[str, Any] = field(default_factory=dict)
    model: str = "smollm2"
    seed: int = 0
    quant: str = "none"
    device: str = "auto"
    max_length: int = 128
    # Recompute each decoder layer's activations in backward instead of keeping them: less
    # memory for LoRA training, about one more forward pass of time (HF gradient checkpointing).
    gradient_checkpointing: bool = False
    # Train each step's batch this many examples at a time, accumulating the gradient: the same
    # step in less activation memory (None: the whole batch at once).
    micro_batch: int | None = None
    # "bf16": local training steps run their forward under bf16 autocast (weights stay fp32).
    autocast: str = "none"
    dp: DPConfig | None = None  # server side: sample, clip, noise, ledger, canaries
    local_dp: LocalDPConfig | None = None  # client side: clip and noise every reply
    robust: RobustConfig | None = None  # server side: norm bound, trimmed mean or median
    participation: str = "none"  # "fedau": participation-aware weights (strategies.participation)
    secagg: SecAggSettings | None = None  # the server learns only each round's sum (SecAgg+)

    def __post_init__(self) -> None:
        from fedft.strategies.participation import check_participation

        check_device_name(self.device)
        check_participation(self.participation)
        if self.dp is not None and self.dp.distributed and self.secagg is None:
            from fedft.privacy.config import DISTRIBUTED_NEEDS_SECAGG

            raise UsageError(DISTRIBUTED_NEEDS_SECAGG)
        if self.secagg is not None:
            from fedft.privacy.secagg.settings import secagg_refusal

            problem = secagg_refusal(
                dp=self.dp is not None,
                robust=self.robust is not None,
                participation=self.participation,
                dp_adaptive=self.dp is not None and self.dp.adaptive,
            )
            if problem is not None:
                raise UsageError(problem)
        if self.autocast not in AUTOCAST_CHOICES:
            choices = ", ".join(AUTOCAST_CHOICES)
            raise UsageError(f"--autocast must be one of {choices}, got {self.autocast!r}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise UsageError(f"--micro-batch must be >= 1, got {self.micro_batch}")


def resolve_strategy(name: str, options: Mapping[str, Any]) -> tuple[StrategySpec, StrategyConfig]:
    """Look the strategy up and build its validated config; bad options are a usage error."""
    strategy = get_strategy(name)
    try:
        config = strategy.make_config(dict(options))
    except (ConfigError, TypeError, ValueError) as exc:
        raise UsageError(f"{name}: {exc}") from exc
    return strategy, config
