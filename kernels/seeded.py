"""Seeded perturbation ops on one contiguous fp32 tensor, dispatched to torch or Triton.

Both backends produce the same bits: z follows the contract of :mod:`fedft.core.rng`, and the
arithmetic is a rounded multiply then a rounded add, seeds summed in order in fp32.
``FEDFT_KERNELS`` picks the backend (see :mod:`fedft.kernels.dispatch`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from types import ModuleType

import torch

from fedft.core.rng import KINDS, validate_seed
from fedft.kernels.dispatch import use_triton


def _backend(op: str, tensor: torch.Tensor) -> ModuleType:
    if use_triton(op, tensor):
        from fedft.kernels.triton import seeded as triton_impl

        return triton_impl
    from fedft.kernels.reference import seeded as reference_impl

    return reference_impl


def _check(tensor: torch.Tensor, offset: int, kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if tensor.dtype != torch.float32 or not tensor.is_contiguous():
        raise ValueError("seeded ops need a contiguous float32 tensor (fp32 master weights)")
    offset = operator.index(offset)
    if offset < 0 or offset + tensor.numel() > 1 << 64:
        raise ValueError("offset + numel must lie in [0, 2**64) (the Philox counter width)")
    return offset


def fill(out: torch.Tensor, seed: int, offset: int, kind: str = "irwin_hall") -> torch.Tensor:
    """Write z(seed) at global offsets ``offset..offset+out.numel()-1`` into ``out``; return it."""
    offset = _check(out, offset, kind)
    return _backend("seeded.fill", out).fill(out, validate_seed(seed), offset, kind)  # type: ignore[no-any-return]


def perturb_(
    weights: torch.Tensor, seed: int, offset: int, alpha: float, kind: str = "irwin_hall"
) -> None:
    """Add ``fp32(alpha) * z(seed)`` to ``weights`` in place (z never stored in full)."""
    offset = _check(weights, offset, kind)
    _backend("seeded.perturb", weights).perturb_(
        weights, validate_seed(seed), offset, float(alpha), kind
    )


def replay_(
    weights: torch.Tensor,
    offset: int,
    seeds: Sequence[int],
    coeffs: Sequence[float] | torch.Tensor,
    kind: str = "irwin_hall",
) -> None:
    """Add ``sum_k fp32(z(seeds[k]) * coeffs[k])`` (fp32, seed order) to ``weights``, one write."""
    offset = _check(weights, offset, kind)
    coeff_t = torch.as_tensor(coeffs, dtype=torch.float64).to(torch.float32).reshape(-1)
    if len(seeds) != coeff_t.numel():
        raise ValueError(f"{len(seeds)} seeds but {coeff_t.numel()} coefficients")
    checked = [validate_seed(s) for s in seeds]
    _backend("seeded.replay", weights).replay_(weights, offset, checked, coeff_t, kind)
