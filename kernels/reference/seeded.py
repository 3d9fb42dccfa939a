"""Pure-torch reference of the seeded kernels on one contiguous fp32 tensor (any device).

z comes from :func:`fedft.kernels.rng_cpu.fill_perturbation`, which is the contract of
:mod:`fedft.core.rng` (a compiled CPU fill, proven bit-identical, or the torch code itself).
Each scaled z is rounded (``z * c``) before it is added, seeds are summed in the order given
into an fp32 accumulator, and the weights are written once per replay.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedft.core.rng import DEFAULT_CHUNK
from fedft.kernels.rng_cpu import fill_perturbation


def _fp32(value: float) -> float:
    """Round a Python float to the nearest fp32, the precision every backend multiplies in."""
    return float(torch.tensor(value, dtype=torch.float32))


def _pieces(numel: int, chunk: int) -> range:
    return range(0, numel, chunk)


def fill(out: torch.Tensor, seed: int, offset: int, kind: str) -> torch.Tensor:
    """Write z(seed) for offsets ``offset..offset+out.numel()-1`` into ``out`` (flat order)."""
    flat = out.view(-1)
    if out.device.type == "cpu":
        fill_perturbation(seed, offset, flat, kind)
        return out
    buffer = torch.empty(min(DEFAULT_CHUNK, max(flat.numel(), 1)), dtype=torch.float32)
    for pos in _pieces(flat.numel(), DEFAULT_CHUNK):
        n = min(DEFAULT_CHUNK, flat.numel() - pos)
        flat[pos : pos + n].copy_(fill_perturbation(seed, offset + pos, buffer[:n], kind))
    return out


def perturb_(weights: torch.Tensor, seed: int, offset: int, alpha: float, kind: str) -> None:
    """``weights += fp32(alpha) * z(seed)`` in place, in bounded pieces."""
    flat = weights.view(-1)
    scale = _fp32(alpha)
    buffer = torch.empty(min(DEFAULT_CHUNK, max(flat.numel(), 1)), dtype=torch.float32)
    for pos in _pieces(flat.numel(), DEFAULT_CHUNK):
        n = min(DEFAULT_CHUNK, flat.numel() - pos)
        z = fill_perturbation(seed, offset + pos, buffer[:n], kind).mul_(scale)
        flat[pos : pos + n].add_(z.to(flat.device))


def replay_(
    weights: torch.Tensor,
    offset: int,
    seeds: Sequence[int],
    coeffs: torch.Tensor,
    kind: str,
) -> None:
    """``weights += sum_k fp32(z(seeds[k]) * coeffs[k])`` in seed order, one write per piece."""
    if len(seeds) != coeffs.numel():
        raise ValueError(f"{len(seeds)} seeds but {coeffs.numel()} coefficients")
    flat = weights.view(-1)
    if not seeds or flat.numel() == 0:
        return
    scales = coeffs.detach().to("cpu", torch.float32).tolist()
    size = min(DEFAULT_CHUNK, flat.numel())
    buffer = torch.empty(size, dtype=torch.float32)
    total = torch.empty(size, dtype=torch.float32)
    for pos in _pieces(flat.numel(), DEFAULT_CHUNK):
        n = min(DEFAULT_CHUNK, flat.numel() - pos)
        acc = total[:n].zero_()
        for seed, scale in zip(seeds, scales, strict=True):
            acc.add_(fill_perturbation(seed, offset + pos, buffer[:n], kind).mul_(scale))
        flat[pos : pos + n].add_(acc.to(flat.device))
