"""Ferret's block-wise projection of an update onto seeded bases, and its two scalings.

For a block of ``d_l`` elements and ``K_l`` bases ``z_k`` with i.i.d. entries of variance 1
(both RNG-contract kinds), ``E[z z^T] = I``, so ``gamma_k = <z_k, delta> / K_l`` and the
reconstruction ``sum_k gamma_k z_k`` has expectation ``delta`` (Shu et al., eq. 6-8, with
rho = 1 for unit-variance bases). Clients always send these unbiased coefficients. The reference
code instead scales by ``d_l / K_l`` with truncated-normal bases of variance rho_l ~ 1/(3 d_l),
which reconstructs ``d_l rho_l delta`` ~ delta/3 in expectation and is compensated by its server
learning rate of 3-10. ``scaling=reference`` reproduces that on the server: it multiplies each
block's coefficients by :func:`reference_scale` (``d_l rho_l``) before the per-basis clip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedft.core.rng import perturbation
from fedft.kernels.seed_ops import project

MIN_BASES = 2
EXACT_LIMIT = 1 << 26  # K_l x d_l values of one block's basis matrix (512 MB in fp64)
SERIES_FROM = 64  # block sizes from which rho comes from its series, not its closed form


def _rho_closed_form(size: int) -> float:
    """The paper's closed form ``1 - 2 psi(a) / (sqrt(d) (2 Phi(a) - 1))``, a = 1/sqrt(d)."""
    a = 1.0 / math.sqrt(size)
    pdf = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    return 1.0 - 2.0 * a * pdf / math.erf(a / math.sqrt(2.0))


def _rho_series(size: int) -> float:
    """The series ``a^2 sum_n x^n/(n! (2n+3)) / sum_n x^n/(n! (2n+1))``, x = -a^2/2.

    Both sums are the Taylor series of the truncated moments ``int_0^a t^2 e^{-t^2/2}`` and
    ``int_0^a e^{-t^2/2}``, with no cancellation; for |x| <= 1/2 they converge to double
    precision in < 20 terms.
    """
    a2 = 1.0 / size
    x = -0.5 * a2
    term, num, den = 1.0, 0.0, 0.0
    for n in range(40):
        num += term / (2 * n + 3)
        den += term / (2 * n + 1)
        term *= x / (n + 1)
        if abs(term) < 1e-20:
            break
    return a2 * num / den


def truncated_normal_variance(size: int) -> float:
    """Ferret's rho_l: the variance of N(0, 1) truncated to [-1/sqrt(d_l), 1/sqrt(d_l)].

    The closed form subtracts two numbers that agree to ~log10(3 d) digits, so for large blocks
    (rho ~ 1/(3 d), d up to 1e9) the series form, exact to rounding, is used instead.
    """
    if size < 1:
        raise ValueError(f"a block has at least one element, got {size}")
    return _rho_closed_form(size) if size < SERIES_FROM else _rho_series(size)


def reference_scale(sizes: torch.Tensor) -> torch.Tensor:
    """``d_l rho_l`` per block (float64, ~1/3): the reference's reconstruction over ours."""
    return torch.tensor(
        [d * truncated_normal_variance(d) for d in sizes.tolist()], dtype=torch.float64
    )


def bases_per_block(norms: Sequence[float], pool: int) -> list[int]:
    """Allocate bases proportionally to each block's update norm: K_l = max(K |d_l|/max, 2)."""
    top = max(norms, default=0.0)
    if top <= 0:
        return [0] * len(norms)
    return [min(pool, max(int(n / top * pool), MIN_BASES)) if n > 0 else 0 for n in norms]


@dataclass(frozen=True)
class Projection:
    """The (seed index, block, coefficient) triples that describe one client's update."""

    index: torch.Tensor
    block: torch.Tensor
    coeff: torch.Tensor


def _norm(delta: torch.Tensor, spans: Sequence[tuple[int, int]]) -> float:
    """L2 norm of ``delta`` over ``spans`` (one span: torch's norm, as before spans existed)."""
    if len(spans) == 1:
        start, end = spans[0]
        return float(delta[start:end].norm())
    return math.sqrt(sum(float(delta[s:e].double().square().sum()) for s, e in spans))


def least_squares(
    delta: torch.Tensor, spans: Sequence[tuple[int, int]], seeds: Sequence[int], kind: str
) -> torch.Tensor:
    """The exact coefficients ``argmin_g |V g - delta|`` over one block (Ferret eq. 4-5).

    ``V``'s columns are the bases over the block's spans; O(K_l^2 d_l), so for small blocks
    only. With ``K_l >= d_l`` independent bases the reconstruction ``V g`` is ``delta`` itself.
    """
    size = sum(end - start for start, end in spans)
    if len(seeds) * size > EXACT_LIMIT:
        raise ValueError(
            f"exact coefficients need a {len(seeds)} x {size} basis matrix; use the "
            "approximate ones (coefficients=approx) or smaller blocks"
        )
    basis = torch.stack(
        [
            torch.cat([perturbation(seed, s, e - s, kind).double() for s, e in spans])
            for seed in seeds
        ]
    )
    target = torch.cat([delta[s:e].double() for s, e in spans])
    # gelsd (SVD) copes with rank-deficient bases (two Rademacher bases equal up to sign),
    # where the default QR driver gave residuals not orthogonal to the bases, now and then.
    solution: torch.Tensor = torch.linalg.lstsq(
        basis.T, target.unsqueeze(1), driver="gelsd"
    ).solution
    return solution.reshape(-1)


def project_blocks(
    delta: torch.Tensor,
    ends: Sequence[int],
    seeds: Sequence[int],
    kind: str,
    generator: torch.Generator,
    *,
    spans: Sequence[Sequence[tuple[int, int]]] = (),
    exact: bool = False,
) -> Projection:
    """Project the flat ``delta`` block by block onto bases drawn from the pool ``seeds``.

    Block ``l`` is ``[ends[l-1], ends[l])``, or, when ``spans`` is given (Ferret's module
    order, see ``Geometry.spans``), the union of ``spans[l]``; its coefficient on a basis sums
    the spans' dot products in span order. ``exact`` solves the least-squares problem per
    block (:func:`least_squares`) instead of the unbiased ``<z, delta> / K_l``.
    """
    starts = [0, *ends[:-1]]
    blocks = spans or [((s, e),) for s, e in zip(starts, ends, strict=True)]
    norms = [_norm(delta, block) for block in blocks]
    counts = bases_per_block(norms, len(seeds))
    index_parts, block_parts, coeff_parts = [], [], []
    for block, (parts, count) in enumerate(zip(blocks, counts, strict=True)):
        if count == 0:
            continue
        chosen = torch.randperm(len(seeds), generator=generator)[:count].sort().values
        picked = [seeds[k] for k in chosen.tolist()]
        index_parts.append(chosen)
        block_parts.append(torch.full((count,), block, dtype=torch.int64))
        if exact:
            coeff_parts.append(least_squares(delta, parts, picked, kind))
            continue
        dots = sum(
            (project(delta[start:end], start, picked, kind) for start, end in parts),
            torch.zeros(count, dtype=torch.float64),
        )
        coeff_parts.append(dots / count)
    if not index_parts:
        empty = torch.zeros(0, dtype=torch.int64)
        return Projection(empty, empty, torch.zeros(0, dtype=torch.float64))
    return Projection(torch.cat(index_parts), torch.cat(block_parts), torch.cat(coeff_parts))


def projection_vector(
    index: torch.Tensor, block: torch.Tensor, coeff: torch.Tensor, seeds: int, blocks: int
) -> torch.Tensor:
    """Minus the coefficients at their (seed, block) places of a flat K x L float64 vector."""
    flat = index.to(torch.int64) * blocks + block.to(torch.int64)
    vector = torch.zeros(seeds * blocks, dtype=torch.float64)
    return vector.index_add_(0, flat, -coeff.to(torch.float64))
