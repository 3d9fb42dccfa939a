"""Triton Ferret projection: dot products of a block's update with K seeded bases.

Each program loads its tile of the update once and loops over the K seeds, generating each
basis tile in registers. Products of two fp32 values are exact in fp64, so the tile sums are
taken in fp64 and written to ``partial[program, k]``; a second kernel then sums each seed's
partials in tile order. No atomics: the result does not depend on scheduling.
Reconstruction is the seeded replay kernel (:func:`fedft.kernels.triton.seeded.replay_`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from fedft.core.rng import MASK32
from fedft.kernels.triton.philox import KIND_CODES, z_at
from fedft.kernels.triton.seeded import seeds_tensor

BLOCK = 1024
SUM_BLOCK = 256


@triton.jit(do_not_specialize=["n", "k", "base_lo", "base_hi"])
def _project_kernel(
    x_ptr,
    n,
    seeds_ptr,
    k,
    base_lo,
    base_hi,
    partial_ptr,
    KIND: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    x = tl.load(x_ptr + idx, mask=mask, other=0.0).to(tl.float64)
    j = 0
    while j < k:  # not range(): Triton 3.6's interpreter cannot range() a runtime scalar
        seed = tl.load(seeds_ptr + j)
        z = z_at(seed, base_lo, base_hi, idx, KIND).to(tl.float64)
        tl.store(partial_ptr + pid * k + j, tl.sum(z * x, axis=0))
        j += 1


@triton.jit(do_not_specialize=["programs", "k"])
def _sum_partials_kernel(partial_ptr, programs, k, out_ptr, BLOCK: tl.constexpr):
    # One program per seed walks the tiles' partials in index order: a fixed reduction order.
    j = tl.program_id(0)
    acc = tl.zeros((BLOCK,), dtype=tl.float64)
    start = 0
    while start < programs:
        rows = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + rows * k + j, mask=rows < programs, other=0.0)
        start += BLOCK
    tl.store(out_ptr + j, tl.sum(acc, axis=0))


def project(
    vector: torch.Tensor, base_offset: int, seeds: Sequence[int], kind: str
) -> torch.Tensor:
    """Return ``[<vector, z(seed_k) at base_offset..>]`` for each seed, float64 on CPU."""
    flat = vector.detach().reshape(-1).to(torch.float32).contiguous()
    n, k = flat.numel(), len(seeds)
    if n == 0 or k == 0:
        return torch.zeros(k, dtype=torch.float64)
    programs = triton.cdiv(n, BLOCK)
    partial = torch.empty((programs, k), dtype=torch.float64, device=flat.device)
    _project_kernel[(programs,)](
        flat,
        n,
        seeds_tensor(seeds, flat.device),
        k,
        base_offset & MASK32,
        base_offset >> 32,
        partial,
        KIND=KIND_CODES[kind],
        BLOCK=BLOCK,
    )
    total = torch.empty(k, dtype=torch.float64, device=flat.device)
    _sum_partials_kernel[(k,)](partial, programs, k, total, BLOCK=SUM_BLOCK)
    return total.cpu()
