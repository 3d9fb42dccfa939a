"""Exact arithmetic on matrices kept as factors: stacked sums, SVD through QR, best rank-r."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

DTYPE = torch.float64


@dataclass(frozen=True)
class LowRank:
    """The matrix ``left @ right`` kept factored: ``left`` is d_out x k, ``right`` k x d_in."""

    left: torch.Tensor
    right: torch.Tensor

    def __post_init__(self) -> None:
        if self.left.dim() != 2 or self.right.dim() != 2:
            raise ValueError("LowRank factors must be matrices")
        if self.left.shape[1] != self.right.shape[0]:
            raise ValueError(
                f"inner sizes differ: {tuple(self.left.shape)} @ {tuple(self.right.shape)}"
            )

    @property
    def rank(self) -> int:
        """Inner size k (an upper bound of the true rank)."""
        return int(self.left.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """``(d_out, d_in)`` of the product."""
        return int(self.left.shape[0]), int(self.right.shape[1])

    def dense(self) -> torch.Tensor:
        """The product as a dense matrix."""
        return self.left @ self.right

    @classmethod
    def zeros(cls, d_out: int, d_in: int) -> LowRank:
        """The zero matrix, with inner size 0."""
        return cls(torch.zeros(d_out, 0, dtype=DTYPE), torch.zeros(0, d_in, dtype=DTYPE))


def stack(terms: Sequence[tuple[torch.Tensor, torch.Tensor, float]]) -> LowRank:
    """Return ``sum_i w_i B_i A_i`` exactly, as ``[w_1 B_1 | w_2 B_2 | ...] @ [A_1; A_2; ...]``.

    Concatenating along the rank dimension turns the sum into one product (FLoRA's stacking), so
    clients of any rank combine without padding and without cross terms.
    """
    if not terms:
        raise ValueError("stack needs at least one term")
    left = torch.cat([b.to(DTYPE) * w for b, _, w in terms], dim=1)
    right = torch.cat([a.to(DTYPE) for _, a, _ in terms], dim=0)
    return LowRank(left, right)


def svd(m: LowRank) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``U diag(S) Vh`` of ``m`` without forming it: QR of each factor, SVD of the core.

    With ``P = Qp Rp`` and ``Q^T = Qq Rq``, ``P Q = Qp (Rp Rq^T) Qq^T``; only the small core is
    decomposed, so the cost is O((d_out + d_in) k^2) instead of O(d_out d_in min(d_out, d_in)).
    """
    d_out, d_in = m.shape
    if m.rank == 0:
        return (
            torch.zeros(d_out, 0, dtype=DTYPE),
            torch.zeros(0, dtype=DTYPE),
            torch.zeros(0, d_in, dtype=DTYPE),
        )
    qp, rp = torch.linalg.qr(m.left.to(DTYPE))
    qq, rq = torch.linalg.qr(m.right.to(DTYPE).T)
    u_core, s, vh_core = torch.linalg.svd(rp @ rq.T, full_matrices=False)
    return qp @ u_core, s, vh_core @ qq.T


def compact(m: LowRank, *, rtol: float | None = None) -> LowRank:
    """Return the same matrix with the inner size cut to its numerical rank (``U S``, ``Vh``)."""
    u, s, vh = svd(m)
    if s.numel() == 0:
        return LowRank.zeros(*m.shape)
    tol = (rtol if rtol is not None else max(m.shape) * torch.finfo(DTYPE).eps) * float(s[0])
    keep = int((s > tol).sum())
    return LowRank(u[:, :keep] * s[:keep], vh[:keep])


def truncate(m: LowRank, rank: int) -> LowRank:
    """Best rank-``rank`` approximation (Eckart-Young), factored as ``U_r S_r`` and ``Vh_r``.

    The result may have a smaller inner size when ``m`` has fewer components.
    """
    if rank < 0:
        raise ValueError(f"rank must be >= 0, got {rank}")
    u, s, vh = svd(m)
    r = min(rank, int(s.numel()))
    return LowRank(u[:, :r] * s[:r], vh[:r])
