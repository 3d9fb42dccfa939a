"""Triton seeded-perturbation kernels: fill z, perturb in place, fused replay of many seeds.

z is generated in registers from (seed, global offset) and never stored (except by ``fill``).
Every launch passes ``enable_fp_fusion=False`` so ``w + z * c`` stays a rounded multiply and a
rounded add, exactly as the torch reference computes it; the replay accumulates its seeds in
order in fp32 registers and writes each weight once, with no atomics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from fedft.core.rng import MASK32
from fedft.kernels.triton.philox import KIND_CODES, z_at

BLOCK = 1024
_INDEX_LIMIT = 1 << 31


@triton.jit(do_not_specialize=["n", "seed", "base_lo", "base_hi"])
def _fill_kernel(out_ptr, n, seed, base_lo, base_hi, KIND: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    tl.store(out_ptr + idx, z_at(seed, base_lo, base_hi, idx, KIND), mask=mask)


@triton.jit(do_not_specialize=["n", "seed", "base_lo", "base_hi", "alpha"])
def _perturb_kernel(
    w_ptr, n, seed, base_lo, base_hi, alpha, KIND: tl.constexpr, BLOCK: tl.constexpr
):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    w = tl.load(w_ptr + idx, mask=mask)
    step = z_at(seed, base_lo, base_hi, idx, KIND) * alpha
    tl.store(w_ptr + idx, w + step, mask=mask)


@triton.jit(do_not_specialize=["n", "k", "base_lo", "base_hi"])
def _replay_kernel(
    w_ptr,
    n,
    seeds_ptr,
    coeffs_ptr,
    k,
    base_lo,
    base_hi,
    KIND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    # A while loop: Triton 3.6's interpreter cannot take range() of a runtime scalar.
    j = 0
    while j < k:
        seed = tl.load(seeds_ptr + j)
        coeff = tl.load(coeffs_ptr + j)
        acc = acc + z_at(seed, base_lo, base_hi, idx, KIND) * coeff
        j += 1
    w = tl.load(w_ptr + idx, mask=mask)
    tl.store(w_ptr + idx, w + acc, mask=mask)


def _check(tensor: torch.Tensor, offset: int) -> None:
    if tensor.dtype != torch.float32 or not tensor.is_contiguous():
        raise ValueError("seeded kernels need a contiguous float32 tensor")
    if tensor.numel() >= _INDEX_LIMIT:
        raise ValueError("seeded kernels take fewer than 2**31 elements per call; split it")
    if offset < 0 or offset + tensor.numel() > 1 << 64:
        raise ValueError("offset + numel must lie in [0, 2**64)")


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def seeds_tensor(seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """Pack unsigned 64-bit seeds into an int64 tensor (two's complement, the kernel bitcasts)."""
    signed = [s - (1 << 64) if s >= 1 << 63 else s for s in seeds]
    return torch.tensor(signed, dtype=torch.int64, device=device)


def fill(out: torch.Tensor, seed: int, offset: int, kind: str) -> torch.Tensor:
    """Write z(seed) for offsets ``offset..offset+out.numel()-1`` into ``out`` (flat order)."""
    _check(out, offset)
    n = out.numel()
    if n:
        _fill_kernel[_grid(n)](
            out,
            n,
            seed,
            offset & MASK32,
            offset >> 32,
            KIND=KIND_CODES[kind],
            BLOCK=BLOCK,
            enable_fp_fusion=False,
        )
    return out


def perturb_(weights: torch.Tensor, seed: int, offset: int, alpha: float, kind: str) -> None:
    """``weights += fp32(alpha) * z(seed)`` in place, z at offsets ``offset..``."""
    _check(weights, offset)
    n = weights.numel()
    if n:
        _perturb_kernel[_grid(n)](
            weights,
            n,
            seed,
            offset & MASK32,
            offset >> 32,
            alpha,
            KIND=KIND_CODES[kind],
            BLOCK=BLOCK,
            enable_fp_fusion=False,
        )


def replay_(
    weights: torch.Tensor,
    offset: int,
    seeds: Sequence[int],
    coeffs: torch.Tensor,
    kind: str,
) -> None:
    """``weights += sum_k fp32(z(seeds[k]) * coeffs[k])``, summed in seed order, one write."""
    _check(weights, offset)
    n = weights.numel()
    if n == 0 or not seeds:
        return
    seed_t = seeds_tensor(seeds, weights.device)
    coeff_t = coeffs.to(device=weights.device, dtype=torch.float32).contiguous()
    _replay_kernel[_grid(n)](
        weights,
        n,
        seed_t,
        coeff_t,
        len(seeds),
        offset & MASK32,
        offset >> 32,
        KIND=KIND_CODES[kind],
        BLOCK=BLOCK,
        enable_fp_fusion=False,
    )
