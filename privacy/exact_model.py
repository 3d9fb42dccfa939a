"""Canary cosines drawn from the exact model of the audited mechanism, in milliseconds.

The model is the platform's DP round with only canary clients and full participation: each
round releases Delta_t = C * sum_{seen j} c_j + N(0, (z C)^2 I_d), the c_j uniform unit
vectors in R^d, for ``rounds`` rounds; the final model delta is their sum. The statistics are
the cosines of seen and unseen canaries with the final delta and, per round, with Delta_t (the
all-iterates threat model keeps each canary's maximum).

Drawing d-dimensional vectors costs O(n d) per draw, too slow for d in the millions. Every
statistic is an inner product, so only the Gram geometry of the m = canaries + rounds Gaussian
vectors matters, and that has an exact m x m representation (Bartlett decomposition): the
coordinates of m i.i.d. N(0, I_d) vectors in an orthonormal basis of their span are the rows
of a lower-triangular L with L_ii ~ sqrt(chi2(d - i)) and N(0, 1) below the diagonal. So a
draw costs O(m^2) whatever d is, with no approximation (it needs d >= m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Draw:
    """One draw of canaries and per-round standard-normal noise, as inner products."""

    dim: int
    seen: int
    # Inner products of every canary (seen first, then unseen) with the sum of the seen
    # canaries and with each round's noise vector: shape (canaries, 1 + rounds).
    products: Floats
    # Gram matrix of [sum of seen canaries, noise_1, ..., noise_T]: shape (1 + rounds,) * 2.
    gram: Floats

    @property
    def rounds(self) -> int:
        """Number of rounds drawn."""
        return int(self.gram.shape[0] - 1)


def draw(rng: np.random.Generator, dim: int, seen: int, unseen: int, rounds: int) -> Draw:
    """Draw seen and unseen unit canaries and ``rounds`` N(0, I_dim) noise vectors."""
    m = seen + unseen + rounds
    if dim < m:
        raise ValueError(f"the exact model needs dim >= canaries + rounds ({dim} < {m})")
    lower = np.tril(rng.standard_normal((m, m)), -1)
    lower[np.diag_indices(m)] = np.sqrt(rng.chisquare(dim - np.arange(m)))
    # Bartlett rows are exchangeable in distribution, so any assignment of rows works.
    canaries = lower[: seen + unseen]
    canaries = canaries / np.linalg.norm(canaries, axis=1, keepdims=True)
    noise = lower[seen + unseen :]
    basis = np.vstack([canaries[:seen].sum(axis=0, keepdims=True), noise])
    return Draw(dim=dim, seen=seen, products=canaries @ basis.T, gram=basis @ basis.T)


def cosines(sample: Draw, noise_multiplier: float) -> tuple[Floats, Floats]:
    """Cosines with the final delta (canaries,) and with each round's delta (rounds, canaries).

    Clip C = 1 without loss of generality; the noise std is ``noise_multiplier``.
    """
    z = noise_multiplier
    rounds = sample.rounds
    # Round t: Delta_t = S + z xi_t, as coefficients on [S, xi_1, ..., xi_T].
    per_round = np.zeros((rounds, rounds + 1))
    per_round[:, 0] = 1.0
    per_round[np.arange(rounds), np.arange(rounds) + 1] = z
    final = per_round.sum(axis=0)
    coeffs = np.vstack([final, per_round])
    dots = coeffs @ sample.products.T
    norms = np.sqrt(np.einsum("ij,jk,ik->i", coeffs, sample.gram, coeffs))
    cos = dots / norms[:, None]
    return cos[0], cos[1:]


def gdp_mu(noise_multiplier: float, rounds: int) -> float:
    """The GDP mu of the whole release for a canary in every round: sqrt(T) / z."""
    return math.sqrt(rounds) / noise_multiplier if noise_multiplier > 0 else math.inf


def noise_for_mu(mu: float, rounds: int) -> float:
    """The noise multiplier z at which ``rounds`` full-participation rounds are mu-GDP."""
    return math.sqrt(rounds) / mu
