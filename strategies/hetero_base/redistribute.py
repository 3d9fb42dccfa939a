"""Hand each client the best rank-r approximation of the global update (FlexLoRA's SVD step)."""

from __future__ import annotations

import torch

from fedft.strategies.hetero_base.lowrank import DTYPE, LowRank, truncate


def client_factors(
    global_update: LowRank, rank: int, scale: float, a_init: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(B, A)`` of rank ``rank`` with ``scale * B @ A`` the best rank-r approximation.

    ``A`` takes the top right singular vectors and ``B = U_r S_r / scale`` (FlexLoRA's split).
    When the update has fewer than ``rank`` components (at the start, or for a layer few devices
    train), the missing rows of A come from ``a_init``, PEFT's random initial A, with zero
    columns in B: the product is unchanged and the gradient of B does not vanish.
    """
    if a_init.shape[0] < rank:
        raise ValueError(f"the initial A has {a_init.shape[0]} rows, fewer than rank {rank}")
    best = truncate(global_update, rank)
    k = best.rank
    d_out, _ = global_update.shape
    b = torch.zeros(d_out, rank, dtype=DTYPE)
    a = a_init[:rank].to(DTYPE).clone()
    b[:, :k] = best.left / scale
    a[:k] = best.right
    return b.to(torch.float32), a.to(torch.float32)
