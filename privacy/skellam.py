"""Rényi DP of the (Poisson-subsampled) Skellam mechanism, the noise of distributed DP.

dp-accounting has no Skellam event, so its RDP curve is computed here and handed to
dp-accounting's RDP-to-(epsilon, delta) conversion. Two published bounds are used:

- Agarwal, Kairouz and Liu (NeurIPS 2021), Corollary 3.6: adding symmetric Skellam noise of
  variance ``mu`` per coordinate to an integer vector of L2 sensitivity ``l2`` and L1
  sensitivity ``l1`` is, for integer orders a > 1,
  ``a l2^2 / (2 mu) + min(((2a - 1) l2^2 + 6 l1) / (4 mu^2), 3 l1 / (2 mu))``-RDP: the
  Gaussian mechanism's curve plus a discretisation term that vanishes as ``l2`` grows.
- Zhu and Wang (ICML 2019), Theorem 6: the general upper bound for Poisson subsampling at
  rate q, valid for any mechanism given its RDP at integer orders 2..a.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon
from scipy.special import gammaln, logsumexp

# Integer orders only: both bounds are stated for them.
ORDERS: tuple[int, ...] = (*range(2, 65), 80, 96, 128, 160, 192, 256)


def skellam_rdp(order: int, *, l2: float, l1: float, variance: float) -> float:
    """RDP at integer ``order`` of Skellam noise of ``variance`` on an integer query."""
    if order < 2:
        raise ValueError("order must be an integer >= 2")
    if variance <= 0:
        return math.inf
    a, mu = float(order), variance
    gaussian = a * l2 * l2 / (2 * mu)
    surcharge = min(((2 * a - 1) * l2 * l2 + 6 * l1) / (4 * mu * mu), 3 * l1 / (2 * mu))
    return gaussian + surcharge


def subsampled_rdp(order: int, rate: float, rdp: Callable[[int], float]) -> float:
    """RDP at integer ``order`` of a mechanism run on a Poisson sample at ``rate``.

    The general bound of Zhu and Wang: it needs only the mechanism's RDP at 2..order, so it
    holds for Skellam; for the Gaussian it is looser than dp-accounting's exact curve.
    """
    if rate >= 1.0:
        return rdp(order)
    if order < 2:
        raise ValueError("order must be an integer >= 2")
    a, q = order, rate
    log_q, log_1q = math.log(q), math.log1p(-q)
    terms = [
        (a - 1) * log_1q + math.log(a * q - q + 1),
        _log_comb(a, 2) + 2 * log_q + (a - 2) * log_1q + min(rdp(2), 700.0),
    ]
    for j in range(3, a + 1):
        terms.append(
            math.log(3)
            + _log_comb(a, j)
            + j * log_q
            + (a - j) * log_1q
            + (j - 1) * min(rdp(j), 1e6)
        )
    bound = float(logsumexp(terms)) / (a - 1)
    return min(bound, rdp(order))  # subsampling never hurts


def _log_comb(n: int, k: int) -> float:
    return float(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1))


def skellam_curve(
    *, l2: float, l1: float, variance: float, rate: float, orders: Sequence[int] = ORDERS
) -> np.ndarray:
    """The RDP curve of one round, at ``orders``."""

    def rdp(order: int) -> float:
        return skellam_rdp(order, l2=l2, l1=l1, variance=variance)

    return np.array([subsampled_rdp(a, rate, rdp) for a in orders], dtype=np.float64)


def rdp_epsilon(curve: np.ndarray, delta: float, orders: Sequence[int] = ORDERS) -> float:
    """Epsilon at ``delta`` of a composed RDP curve (dp-accounting's conversion)."""
    if not np.all(np.isfinite(curve)):
        finite = np.isfinite(curve)
        if not finite.any():
            return math.inf
        curve, orders = curve[finite], [o for o, ok in zip(orders, finite, strict=True) if ok]
    eps, _ = compute_epsilon(np.asarray(orders, dtype=np.float64), curve, delta)
    return float(eps)
