"""Configuration of the ``ferret`` strategy."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedft.core.config import Preset, option
from fedft.strategies.options import FirstOrderOptions
from fedft.strategies.seedpool.config import SeedPoolConfig

OPTIMIZERS = ("adamw", "sgd")
BLOCK_ORDERS = ("name", "module")
SCHEDULES = ("constant", "linear", "cosine")
SCALINGS = ("unbiased", "reference")

# The reference scales coefficients by d/K with truncated-normal bases, which reconstructs
# delta/3; fedft's coefficients are unbiased, so its server lr is the reference's divided by 3
# (NI: 10 -> 3.33, Dolly: 3 -> 1). Its per-basis clip of 10 acts before its server lr, ours after.
# The -reference presets instead take the reference's scale, clip order and lr as they are.
_FERRET_COMMON = {
    "optimizer": "sgd",
    "lr": 1e-4,
    "local_steps": 10,
    "batch_size": 4,
    "seeds": 200,
    "fraction": 0.05,
    "equal_weight": True,
    "max_grad_norm": None,
    "data_order": "persistent",
    "block_order": "module",
    "block_size": 0,
    "server_lr_schedule": "constant",
    "trainable": "all",
}
_FERRET_OTHER = (
    "T=10 steps of 4 accumulated single examples: here 10 steps of one 4-example batch "
    "(the loss is averaged over the batch's tokens, not over the 4 examples)",
    "dropout: the reference trains in train mode with the model's dropout; fedft's "
    "models have none",
    "rounds (12 on NI, 20 on Dolly) and the client counts are run flags (--rounds, --clients)",
)
_FERRET_UNMATCHED = (
    "bases: the reference draws truncated normals per seed; fedft's RNG contract uses "
    "Irwin-Hall or Rademacher bases with the unbiased 1/K scale (server lr and clip converted; "
    "the -reference presets keep the reference's d/K scale and clip order instead)",
    *_FERRET_OTHER,
)
_FERRET_REFERENCE_UNMATCHED = (
    "bases: the reference draws truncated normals per seed; here Irwin-Hall or Rademacher "
    "bases scaled to the truncated normal's variance, so the scale and the mean update match "
    "but the estimator's higher moments (its noise, how often the clip bites) differ",
    *_FERRET_OTHER,
)
_NI = "Ferret (Shu et al., ICML 2025) App. C.1 and scripts/ferret.sh, Natural Instructions"
_DOLLY = "Ferret (Shu et al., ICML 2025) App. C.1, Dolly-15K (global lr 3)"
PAPER_NI = Preset(
    values={**_FERRET_COMMON, "server_lr": 10.0 / 3.0, "basis_clip": 100.0},
    source=_NI,
    unmatched=_FERRET_UNMATCHED,
)
PAPER_DOLLY = Preset(
    values={**_FERRET_COMMON, "server_lr": 1.0, "basis_clip": 30.0},
    source=_DOLLY,
    unmatched=_FERRET_UNMATCHED,
)
REFERENCE_NI = Preset(
    values={**_FERRET_COMMON, "scaling": "reference", "server_lr": 10.0, "basis_clip": 10.0},
    source=f"{_NI}; the code's d/K scale",
    unmatched=_FERRET_REFERENCE_UNMATCHED,
)
REFERENCE_DOLLY = Preset(
    values={**_FERRET_COMMON, "scaling": "reference", "server_lr": 3.0, "basis_clip": 10.0},
    source=f"{_DOLLY}; the code's d/K scale",
    unmatched=_FERRET_REFERENCE_UNMATCHED,
)


@dataclass(frozen=True)
class FerretConfig(SeedPoolConfig, FirstOrderOptions):
    """First-order local steps, projected per block onto seeded random bases."""

    seeds: int = option(200, "K, the pool of shared bases; a block uses between 2 and K of them")
    block_size: int = option(
        0, "target elements per block (0: 0.9 x the median parameter size, as the paper's code)"
    )
    local_steps: int = option(10, "first-order steps each sampled client runs per round")
    batch_size: int = option(4, "examples per local step")
    lr: float = option(
        1e-3,
        "learning rate of the local optimizer; large AdamW steps on large blocks (an embedding) "
        "do not survive the projection: on SmolLM2 use 1e-4 on attention, 1e-5 on all weights",
    )
    optimizer: str = option("adamw", "local optimizer: adamw or sgd")
    server_lr: float = option(1.0, "global learning rate applied to the reconstructed update")
    server_lr_schedule: str = option(
        "constant",
        "server lr over the run: constant, linear or cosine decay from server_lr to 0 over "
        "schedule_rounds (the reference's --anneal; its scripts use no annealing)",
    )
    schedule_rounds: int = option(0, "rounds the server-lr schedule spans (needed unless constant)")
    basis_clip: float = option(
        0.0,
        "clip each (seed, block) reconstructed vector server_lr*c*z to this L2 norm before it "
        "is applied, taking |z| = sqrt(block size) (exact for rademacher); 0: off (reference: "
        "10); with scaling=reference the vector is d*rho*c*z and the server lr comes after",
    )
    scaling: str = option(
        "unbiased",
        "unbiased: the update reconstructs delta in expectation (the paper's 1/(rho K)); "
        "reference: the reference code's d/K with truncated-normal bases, which reconstructs "
        "d*rho*delta ~ delta/3 per block, clipped per basis before its server lr (set 10 or 3)",
    )
    coefficients: str = option(
        "approx",
        "approx: the unbiased <z, delta>/K per basis (eq. 6-8, what the paper runs); exact: "
        "least squares (V^T V)^-1 V^T delta per block (eq. 4-5), O(K^2 d), small models only",
    )
    block_order: str = option(
        "name",
        "order in which parameters are grouped into blocks: name (the RNG contract's sorted "
        "order) or module (the model's module order, as the paper's code groups them)",
    )

    @classmethod
    def presets(cls) -> dict[str, Preset]:
        """``paper`` (= ``paper-ni``), ``paper-dolly`` and their reference-scaled twins."""
        return {
            "paper": PAPER_NI,
            "paper-ni": PAPER_NI,
            "paper-dolly": PAPER_DOLLY,
            "paper-reference": REFERENCE_NI,
            "paper-dolly-reference": REFERENCE_DOLLY,
        }

    def server_lr_at(self, server_round: int) -> float:
        """The server lr of round ``server_round`` (1-based) under the schedule."""
        if self.server_lr_schedule == "constant":
            return self.server_lr
        progress = min(max(server_round - 1, 0) / self.schedule_rounds, 1.0)
        if self.server_lr_schedule == "linear":
            return self.server_lr * (1.0 - progress)
        return self.server_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def checks(self) -> list[tuple[bool, str]]:
        """Shared checks plus the local training's and the projection's."""
        return [
            *super().checks(),
            (2 <= self.seeds <= 1 << 15, "seeds must be in [2, 32768]"),
            (self.block_size >= 0, "block_size must be >= 0"),
            (self.local_steps >= 1, "local_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.server_lr > 0, "server_lr must be > 0"),
            (self.server_lr_schedule in SCHEDULES, f"server_lr_schedule must be in {SCHEDULES}"),
            (
                self.server_lr_schedule == "constant" or self.schedule_rounds >= 1,
                "a server_lr_schedule other than constant needs schedule_rounds >= 1",
            ),
            (self.basis_clip >= 0, "basis_clip must be >= 0"),
            (self.coefficients in ("approx", "exact"), "coefficients must be approx or exact"),
            (self.scaling in SCALINGS, f"scaling must be one of {', '.join(SCALINGS)}"),
            (
                self.scaling == "unbiased" or self.coefficients == "approx",
                "scaling=reference reproduces the reference code's d/K estimator, which has no "
                "least-squares form: use coefficients=approx with it",
            ),
            (self.block_order in BLOCK_ORDERS, f"block_order must be one of {BLOCK_ORDERS}"),
        ]
