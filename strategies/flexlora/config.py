"""Configuration of the ``flexlora`` strategy."""

from __future__ import annotations

from dataclasses import dataclass

from fedft.core.config import Preset
from fedft.strategies.hetero_base.exact import ExactConfig
from fedft.strategies.options import ALL_LINEAR

# FlexLoRA's main.py (alibaba/FederatedScope, branch FlexLoRA): alpha 16, dropout 0.05, all
# linear targets, 5% of clients, local batch 4, AdamW, no gradient clipping.
PAPER = Preset(
    values={
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": ALL_LINEAR,
        "fraction": 0.05,
        "batch_size": 4,
        "max_grad_norm": None,
        "data_order": "persistent",
    },
    source="FlexLoRA (Bai et al., arXiv 2402.11505) reference code, main.py",
    unmatched=(
        "ranks: the reference draws one of four rank configurations per client (8/30/200, "
        "attention vs MLP) from a client-mix distribution; fedft derives a rank in "
        "[min_rank, max_rank] from each device's measured speed",
        "one local epoch with lr 1e-6 halved after round 15: fedft runs local_steps steps "
        "at a constant lr (set local_steps and lr for your data)",
        "early stopping with patience 3 and the 1,613-client NI split are run-level choices",
    ),
)


@dataclass(frozen=True)
class FlexLoRAConfig(ExactConfig):
    """Every layer at a per-device rank; FlexLoRA's exact aggregation and SVD redistribution."""

    @classmethod
    def presets(cls) -> dict[str, Preset]:
        """``paper``: the settings of FlexLoRA's reference runs that map onto fedft options."""
        return {"paper": PAPER}
