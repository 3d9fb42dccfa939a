"""Configuration of the ``fedkseed`` strategy (and the base of ``fedkseed_pro``'s)."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import Preset, option
from fedft.strategies.seedpool.config import SeedPoolConfig

# Qin et al., ICML 2024 (arXiv 2312.06353): the README command and main.py defaults of the
# official code, as Ferret's paper also states them (App. C.1.2).
PAPER = Preset(
    values={
        "seeds": 4096,
        "lr": 3e-7,
        "eps": 5e-4,
        "local_steps": 200,
        "batch_size": 1,
        "fraction": 0.05,
        "grad_clip": 0.0,
        "equal_weight": False,
        "trainable": "all",
        "weight_decay": 0.0,
    },
    source="FedKSeed (Qin et al., ICML 2024) official code: README command and main.py",
    unmatched=(
        "z: the reference draws torch.normal per seed; fedft's RNG contract uses Irwin-Hall "
        "(approximately normal, identical on every backend)",
        "dtype: the reference tunes an fp16 model; seed replays here need fp32 master weights",
        "rounds (40 on NI, 60 on Dolly) and the 738/200 clients are run flags "
        "(--rounds, --clients), not strategy options",
    ),
)


@dataclass(frozen=True)
class FedKSeedConfig(SeedPoolConfig):
    """Seed pool, zeroth-order local steps and sampling for FedKSeed."""

    local_steps: int = option(200, "zeroth-order steps each sampled client runs per round")
    batch_size: int = option(1, "examples per zeroth-order step")
    lr: float = option(1e-5, "learning rate of the zeroth-order steps")
    eps: float = option(1e-3, "perturbation scale: losses are taken at w + eps*z and w - eps*z")
    grad_clip: float = option(0.0, "skip a step when |loss+ - loss-| exceeds this (0: never)")
    weight_decay: float = option(
        0.0,
        "MeZO's decoupled weight decay: each step also takes lr*weight_decay*w off every "
        "trainable tensor except 1-D ones (biases, norm scales), skipped steps included",
    )

    @classmethod
    def presets(cls) -> dict[str, Preset]:
        """``paper``: the hyperparameters of FedKSeed's reference runs."""
        return {"paper": PAPER}

    def checks(self) -> list[tuple[bool, str]]:
        """Shared checks plus the zeroth-order step's."""
        return [
            *super().checks(),
            (self.local_steps >= 1, "local_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.eps > 0, "eps must be > 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (
                self.lr * self.weight_decay < 1,
                f"lr * weight_decay must be < 1 (got {self.lr * self.weight_decay:g}): "
                "a step would flip or zero the weights",
            ),
        ]
