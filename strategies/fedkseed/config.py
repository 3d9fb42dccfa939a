"""Configuration of the ``fedkseed`` strategy (and the base of ``fedkseed_pro``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import option
from fedft.strategies.seedpool.config import SeedPoolConfig


@dataclass(frozen=True)
class FedKSeedConfig(SeedPoolConfig):
    """Seed pool, zeroth-order local steps and sampling for FedKSeed."""

    local_steps: int = option(200, "zeroth-order steps each sampled client runs per round")
    batch_size: int = option(1, "examples per zeroth-order step")
    lr: float = option(1e-5, "learning rate of the zeroth-order steps")
    eps: float = option(1e-3, "perturbation scale: losses are taken at w + eps*z and w - eps*z")
    grad_clip: float = option(0.0, "skip a step when |loss+ - loss-| exceeds this (0: never)")

    def checks(self) -> list[tuple[bool, str]]:
        """Shared checks plus the zeroth-order step's."""
        return [
            *super().checks(),
            (self.local_steps >= 1, "local_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.eps > 0, "eps must be > 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
        ]
