"""FedKSeed-Pro's seed importance: mean clipped |g| per seed, sent as 8-bit levels."""

from __future__ import annotations

import torch

LEVELS = 255


def importance_levels(abs_sum: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Return each seed's importance, min-max normalised to [0, 1] and quantized to uint8.

    A seed's score is the mean of its clipped |g| history, which starts with one 0 (the
    reference code's ``grad_initial``), so unused seeds score 0.
    """
    score = abs_sum / (counts + 1)
    low, high = score.min(), score.max()
    normalised = (score - low) / (high - low + 1e-10)
    return torch.round(normalised * LEVELS).to(torch.uint8)


def probabilities(levels: torch.Tensor) -> torch.Tensor:
    """Return the sampling distribution both sides derive from the levels: softmax(level/255).

    The most important seed is at most e times likelier than the least, as in the paper.
    """
    return torch.softmax(levels.to(torch.float64) / LEVELS, dim=0)
