"""Factored matrices: stacking is exact, the QR route gives the true SVD and the best rank-r."""

from __future__ import annotations

import pytest
import torch

from fedft.strategies.hetero_base.lowrank import DTYPE, LowRank, compact, stack, svd, truncate


def factors(seed: int, d_out: int, r: int, d_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d_out, r, generator=g, dtype=DTYPE), torch.randn(
        r, d_in, generator=g, dtype=DTYPE
    )


def test_stack_is_the_weighted_sum_of_products() -> None:
    terms = [(*factors(i, 12, r, 9), w) for i, (r, w) in enumerate([(1, 0.2), (4, 1.5), (3, -0.7)])]
    expected = sum(w * (b @ a) for b, a, w in terms)
    got = stack(terms)
    assert got.rank == 8
    assert torch.allclose(got.dense(), expected, atol=1e-12)


def test_svd_through_qr_matches_the_dense_svd() -> None:
    m = stack([(*factors(1, 20, 5, 14), 1.0), (*factors(2, 20, 3, 14), 0.5)])
    u, s, vh = svd(m)
    s_ref = torch.linalg.svdvals(m.dense())
    assert torch.allclose(s, s_ref[: s.numel()], atol=1e-10)
    assert torch.allclose((u * s) @ vh, m.dense(), atol=1e-10)
    assert torch.allclose(u.T @ u, torch.eye(s.numel(), dtype=DTYPE), atol=1e-10)


def test_stack_wider_than_the_matrix_still_factors_exactly() -> None:
    m = stack([(*factors(i, 6, 4, 5), 1.0) for i in range(3)])  # inner 12 > min(6, 5)
    assert torch.allclose(compact(m).dense(), m.dense(), atol=1e-10)
    assert compact(m).rank == 5


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_truncate_is_the_best_rank_r_approximation(rank: int) -> None:
    m = stack([(*factors(3, 16, 4, 11), 1.0), (*factors(4, 16, 5, 11), 0.3)])
    dense = m.dense()
    u, s, vh = torch.linalg.svd(dense, full_matrices=False)
    reference = (u[:, :rank] * s[:rank]) @ vh[:rank]
    got = truncate(m, rank).dense()
    assert torch.allclose(got, reference, atol=1e-9)
    # Eckart-Young: the error is the tail of the spectrum, and a random rank-r matrix does worse.
    err = torch.linalg.matrix_norm(dense - got)
    assert torch.isclose(err, s[rank:].square().sum().sqrt(), atol=1e-9)
    other = truncate(stack([(*factors(9, 16, rank, 11), 1.0)]), rank).dense()
    assert torch.linalg.matrix_norm(dense - other) > err


def test_compact_drops_zero_components_and_zero_matrices_stay_empty() -> None:
    b, a = factors(5, 10, 2, 7)
    doubled = stack([(b, a, 1.0), (b, a, 1.0)])  # rank 2 written with inner size 4
    small = compact(doubled)
    assert small.rank == 2
    assert torch.allclose(small.dense(), 2 * (b @ a), atol=1e-10)
    assert compact(LowRank.zeros(4, 3)).rank == 0
    assert truncate(LowRank.zeros(4, 3), 2).dense().abs().sum() == 0
