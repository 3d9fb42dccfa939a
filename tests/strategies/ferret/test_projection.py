"""Tests for Ferret's block-wise projection onto seeded bases: allocation, values, unbiasedness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedft.core.rng import KINDS, perturbation
from fedft.kernels.dispatch import ENV_KERNELS, ENV_LEGACY_RNG
from fedft.kernels.rng_cpu import fill_perturbation
from fedft.strategies.ferret.projection import (
    MIN_BASES,
    Projection,
    bases_per_block,
    project_blocks,
)
from fedft.strategies.seedpool.pool import pool_seeds


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (ENV_KERNELS, ENV_LEGACY_RNG):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_largest_block_gets_the_whole_pool_and_others_a_share() -> None:
    assert bases_per_block([4.0, 2.0, 1.0, 3.0], 16) == [16, 8, 4, 12]
    # Truncated, never below the minimum; zero-norm blocks get nothing.
    assert bases_per_block([10.0, 2.9, 0.01, 0.0], 10) == [10, 2, MIN_BASES, 0]
    assert bases_per_block([1.0, 1.0], 7) == [7, 7]
    assert bases_per_block([5.0], 3) == [3]


def test_bases_per_block_degenerate_inputs() -> None:
    assert bases_per_block([], 8) == []
    assert bases_per_block([0.0, 0.0], 8) == [0, 0]
    # The minimum never exceeds the pool itself.
    assert bases_per_block([1.0, 0.1], 1) == [1, 1]


def test_bases_per_block_is_scale_invariant() -> None:
    norms = [0.3, 1.7, 0.05, 0.0, 1.1]
    expected = bases_per_block(norms, 32)
    assert bases_per_block([n * 1024 for n in norms], 32) == expected
    assert all(k <= 32 for k in expected)
    assert expected[1] == 32


D = 64
ENDS = [24, 40, 64]


def make_delta(seed: int = 0) -> torch.Tensor:
    delta = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    delta[24:40] *= 0.2  # a smaller block gets fewer bases
    return delta


def blocks(proj: Projection) -> dict[int, tuple[list[int], list[float]]]:
    out: dict[int, tuple[list[int], list[float]]] = {}
    for i, b, c in zip(proj.index.tolist(), proj.block.tolist(), proj.coeff.tolist(), strict=True):
        out.setdefault(b, ([], []))
        out[b][0].append(i)
        out[b][1].append(c)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_project_blocks_coefficients_are_dots_over_the_basis_count(kind: str) -> None:
    seeds = pool_seeds(3, 32)
    delta = make_delta()
    proj = project_blocks(delta, ENDS, seeds, kind, torch.Generator().manual_seed(1))
    assert proj.index.dtype == torch.int64
    assert proj.block.dtype == torch.int64
    assert proj.coeff.dtype == torch.float64
    starts = [0, *ENDS[:-1]]
    norms = [float(delta[s:e].norm()) for s, e in zip(starts, ENDS, strict=True)]
    counts = bases_per_block(norms, len(seeds))
    by_block = blocks(proj)
    assert sorted(by_block) == [0, 1, 2]
    for block, (start, end) in enumerate(zip(starts, ENDS, strict=True)):
        index, coeff = by_block[block]
        assert len(index) == counts[block]
        assert index == sorted(set(index)), "indices sorted and unique per block"
        assert all(0 <= i < len(seeds) for i in index)
        for i, c in zip(index, coeff, strict=True):
            z = perturbation(seeds[i], start, end - start, kind).double()
            dot = float(torch.dot(delta[start:end].double(), z))
            assert c == pytest.approx(dot / counts[block], rel=1e-12, abs=1e-12)
    # Blocks come out in order.
    assert proj.block.tolist() == sorted(proj.block.tolist())


def test_project_blocks_is_deterministic_per_generator_seed() -> None:
    seeds = pool_seeds(3, 32)
    delta = make_delta()
    a = project_blocks(delta, ENDS, seeds, "rademacher", torch.Generator().manual_seed(5))
    b = project_blocks(delta, ENDS, seeds, "rademacher", torch.Generator().manual_seed(5))
    c = project_blocks(delta, ENDS, seeds, "rademacher", torch.Generator().manual_seed(6))
    assert torch.equal(a.index, b.index)
    assert torch.equal(a.coeff, b.coeff)
    assert not torch.equal(a.index, c.index)


def test_zero_blocks_get_no_bases_and_a_zero_delta_gives_an_empty_projection() -> None:
    seeds = pool_seeds(3, 16)
    delta = make_delta()
    delta[24:40] = 0.0
    proj = project_blocks(delta, ENDS, seeds, "irwin_hall", torch.Generator().manual_seed(0))
    assert 1 not in proj.block.tolist()
    assert set(proj.block.tolist()) == {0, 2}
    empty = project_blocks(torch.zeros(D), ENDS, seeds, "irwin_hall", torch.Generator())
    assert empty.index.numel() == empty.block.numel() == empty.coeff.numel() == 0
    assert empty.coeff.dtype == torch.float64


def reconstruct(proj: Projection, z: torch.Tensor, ends: list[int]) -> torch.Tensor:
    starts = [0, *ends[:-1]]
    out = torch.zeros(z.shape[1], dtype=torch.float64)
    for i, b, c in zip(proj.index.tolist(), proj.block.tolist(), proj.coeff.tolist(), strict=True):
        out[starts[b] : ends[b]] += c * z[i, starts[b] : ends[b]]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_reconstruction_is_unbiased_over_random_bases(kind: str) -> None:
    # For bases with i.i.d. unit-variance entries, E[sum_k c_k z_k] = E[z z^T] delta = delta.
    # Each draw takes a fresh pool (random bases) and a fresh generator (random subset): one
    # reconstruction from K <= 16 bases of a 24-element block is far off, the mean is close.
    delta = make_delta(2)
    ref = delta.double()
    pool = 16
    counts = bases_per_block(
        [float(ref[s:e].norm()) for s, e in zip([0, *ENDS[:-1]], ENDS, strict=True)], pool
    )
    assert max(counts) == pool
    assert min(counts) < pool
    recons = []
    for g in range(200):
        seeds = pool_seeds(1000 + g, pool)
        # fill_perturbation is the bit-identical fast twin of perturbation (tests/kernels).
        z = torch.stack([fill_perturbation(s, 0, torch.empty(D), kind) for s in seeds]).double()
        proj = project_blocks(delta, ENDS, seeds, kind, torch.Generator().manual_seed(g))
        recons.append(reconstruct(proj, z, ENDS))
    stacked = torch.stack(recons)
    single = float(((stacked - ref).norm(dim=1) / ref.norm()).mean())
    mean = stacked.mean(0)
    mean_error = float((mean - ref).norm() / ref.norm())
    cosine = float(torch.nn.functional.cosine_similarity(mean, ref, dim=0))
    assert single > 0.8  # K < d: one reconstruction is mostly noise
    # Measured: single ~1.3, mean ~0.09 (the 1/sqrt(200) shrinkage of an unbiased estimate).
    assert mean_error < 0.2 * single
    assert mean_error < 0.2
    assert cosine > 0.97


def rebuild(
    proj: Projection, seeds: list[int], blocks: list[list[tuple[int, int]]], d: int, kind: str
) -> torch.Tensor:
    """Sum over (seed, block) of coefficient * z over the block's spans, in float64."""
    out = torch.zeros(d, dtype=torch.float64)
    for k, b, c in zip(proj.index.tolist(), proj.block.tolist(), proj.coeff.tolist(), strict=True):
        for s, e in blocks[b]:
            out[s:e] += c * perturbation(seeds[k], s, e - s, kind).double()
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_exact_coefficients_are_the_least_squares_fit(kind: str) -> None:
    seeds = pool_seeds(7, 16)
    blocks = [[(0, 4), (10, 12)], [(4, 10)]]
    delta = torch.randn(12, generator=torch.Generator().manual_seed(2))
    delta[4:10] *= 0.01  # a small block gets MIN_BASES bases only
    proj = project_blocks(
        delta, [6, 12], seeds, kind, torch.Generator().manual_seed(0), spans=blocks, exact=True
    )
    rebuilt = rebuild(proj, seeds, blocks, 12, kind)
    for b, spans in enumerate(blocks):
        used = [
            k for k, kb in zip(proj.index.tolist(), proj.block.tolist(), strict=True) if kb == b
        ]
        basis = torch.stack(
            [
                torch.cat([perturbation(seeds[k], s, e - s, kind).double() for s, e in spans])
                for k in used
            ]
        )
        residual = torch.cat([delta[s:e].double() - rebuilt[s:e] for s, e in spans])
        # The residual is orthogonal to every basis used; with bases spanning the block it is 0.
        assert float((basis @ residual).abs().max()) < 1e-9
        if int(torch.linalg.matrix_rank(basis)) == basis.shape[1]:
            assert float(residual.abs().max()) < 1e-9
    assert len([b for b in proj.block.tolist() if b == 0]) == 16
