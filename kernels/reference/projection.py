"""Pure-torch reference of Ferret's projection onto seeded bases (and its reconstruction).

``project`` takes each piece's dot product in float64 (fp32 products are exact there), so the
result depends on the chunking only through float64 rounding. Reconstruction is the seeded
replay (:func:`fedft.kernels.reference.seeded.replay_` into zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedft.core.rng import DEFAULT_CHUNK
from fedft.kernels.rng_cpu import fill_perturbation


def project(
    vector: torch.Tensor,
    base_offset: int,
    seeds: Sequence[int],
    kind: str,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Return ``[<vector, z(seed_k) at base_offset..>]`` for each seed, float64 on CPU."""
    flat = vector.detach().reshape(-1).to("cpu", torch.float32)
    dots = torch.zeros(len(seeds), dtype=torch.float64)
    buffer = torch.empty(min(chunk, max(flat.numel(), 1)), dtype=torch.float32)
    for pos in range(0, flat.numel(), chunk):
        piece = flat[pos : pos + chunk].double()
        for k, seed in enumerate(seeds):
            z = fill_perturbation(seed, base_offset + pos, buffer[: piece.numel()], kind)
            dots[k] += torch.dot(z.double(), piece)
    return dots
