"""Ferret projection / reconstruction on seeded bases, dispatched to torch or Triton."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch

from fedft.core.rng import DEFAULT_CHUNK, KINDS, validate_seed
from fedft.kernels import seeded
from fedft.kernels.dispatch import use_triton


def project(
    vector: torch.Tensor,
    base_offset: int,
    seeds: Sequence[int],
    kind: str = "irwin_hall",
    *,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Return ``[<vector, z(seed_k)>]`` (float64, CPU); ``vector`` starts at ``base_offset``.

    Both backends multiply exactly in float64 and reduce in a fixed order, so they agree to
    float64 rounding and each is deterministic run to run.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    base_offset = operator.index(base_offset)
    if base_offset < 0 or base_offset + vector.numel() > 1 << 64:
        raise ValueError("base_offset + numel must lie in [0, 2**64)")
    checked = [validate_seed(s) for s in seeds]
    if use_triton("projection.project", vector):
        from fedft.kernels.triton import projection as triton_impl

        return triton_impl.project(vector, base_offset, checked, kind)
    from fedft.kernels.reference import projection as reference_impl

    return reference_impl.project(vector, base_offset, checked, kind, chunk=chunk)


def reconstruct(
    numel: int,
    base_offset: int,
    seeds: Sequence[int],
    coeffs: Sequence[float] | torch.Tensor,
    kind: str = "irwin_hall",
    *,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Return ``sum_k fp32(z(seed_k) * coeff_k)`` over ``numel`` offsets from ``base_offset``."""
    out = torch.zeros(numel, dtype=torch.float32, device=device)
    seeded.replay_(out, base_offset, seeds, coeffs, kind)
    return out
