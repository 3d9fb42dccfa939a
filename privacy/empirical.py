"""The one-shot empirical privacy estimate (Andrew et al., ICLR 2024, arXiv:2302.03098).

Statistics are cosines between canary directions and the released model delta. Inserted
("seen") canaries are compared with the null: the cosine of a fixed vector with an independent
uniform direction, whose (t + 1) / 2 is Beta((d-1)/2, (d-1)/2), about N(0, 1/d) for d >= 1000.

* :func:`epsilon_two_gaussians`: the exact epsilon between N(mu1, s1^2) and N(mu2, s2^2)
  (privacy loss is quadratic in the outcome; Steinke 2022, arXiv:2210.00597).
* :func:`epsilon_estimate`: the paper's estimate, null vs a Gaussian fitted to seen cosines.
* :func:`epsilon_lower_bound` / :func:`epsilon_lower_bound_null`: a high-confidence lower bound
  from error rates at the best threshold (Jagielski et al. 2020, with Jeffreys intervals).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from fedft.privacy.accounting import check_delta

Floats = npt.NDArray[np.float64]
# Below this dimension the exact cosine null is used instead of N(0, 1/d).
EXACT_NULL_BELOW = 1000
_GRID = 10_000


def jeffreys_upper(k: npt.ArrayLike, n: int, alpha: float) -> Floats:
    """One-sided (1 - alpha) Jeffreys upper bound on a binomial rate from k successes of n."""
    k = np.asarray(k, dtype=np.float64)
    return np.asarray(stats.beta.ppf(1 - alpha, k + 0.5, n - k + 0.5), dtype=np.float64)


def epsilon_from_rates(log_fpr: npt.ArrayLike, fnr: npt.ArrayLike, delta: float) -> Floats:
    """Epsilon implied by a test's error rates: the larger of the two DP inequalities, >= 0.

    ``log_fpr`` is in log space because tail rates of the closed-form null underflow. Invalid
    terms (1 - delta - rate <= 0) are ignored.
    """
    log_fpr = np.asarray(log_fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(1 - delta - fnr) - log_fpr
        second = np.log(1 - delta - np.exp(log_fpr)) - np.log(fnr)
    both = np.stack([first, second])
    best = np.where(
        np.isnan(both).all(axis=0), np.nan, np.nanmax(np.nan_to_num(both, nan=-np.inf), axis=0)
    )
    return np.asarray(np.clip(best, 0, None), dtype=np.float64)


def null_log_cdf(t: npt.ArrayLike, dim: int) -> Floats:
    """Log P(X <= t) for the cosine X of a uniform direction in ``dim`` dimensions."""
    t = np.asarray(t, dtype=np.float64)
    if dim >= EXACT_NULL_BELOW:
        return np.asarray(stats.norm.logcdf(t, scale=dim**-0.5), dtype=np.float64)
    half = (dim - 1) / 2
    return np.asarray(stats.beta.logcdf((t + 1) / 2, half, half), dtype=np.float64)


def epsilon_lower_bound(
    seen: npt.ArrayLike, unseen: npt.ArrayLike, alpha: float, delta: float
) -> float:
    """Best lower bound over thresholds, with both error rates from seen vs unseen statistics."""
    seen_v = np.asarray(seen, dtype=np.float64)
    unseen_v = np.asarray(unseen, dtype=np.float64)
    # Sort together; at equal values unseen come first, so a cut never splits a tie in favour
    # of the test.
    values = np.concatenate([seen_v, unseen_v])
    is_seen = np.concatenate([np.ones(seen_v.size), np.zeros(unseen_v.size)])
    order = np.lexsort((is_seen, values))
    flags = is_seen[order]
    # Cut i predicts "seen" for the statistics at positions >= i.
    false_neg = np.concatenate([[0.0], np.cumsum(flags)])
    false_pos = unseen_v.size - np.concatenate([[0.0], np.cumsum(1 - flags)])
    log_fpr = np.log(jeffreys_upper(false_pos, unseen_v.size, alpha))
    fnr = jeffreys_upper(false_neg, seen_v.size, alpha)
    return float(np.max(epsilon_from_rates(log_fpr, fnr, delta)))


def epsilon_lower_bound_null(seen: npt.ArrayLike, dim: int, alpha: float, delta: float) -> float:
    """Lower bound using the closed-form null for false positives (no unseen canaries needed).

    The best threshold sits just below a seen cosine, so thresholds are the seen cosines and
    the one at the threshold is not a false negative.
    """
    thresholds = np.sort(np.asarray(seen, dtype=np.float64))
    log_fpr = null_log_cdf(-thresholds, dim)  # P(X >= t) = P(X <= -t) by symmetry
    fnr = jeffreys_upper(np.arange(thresholds.size), thresholds.size, alpha)
    return float(np.max(epsilon_from_rates(log_fpr, fnr, delta)))


def _log_delta(mu1: float, s1: float, mu2: float, s2: float, eps: float) -> float:
    """Log of delta(eps) from N1 = N(mu1, s1^2) to N2 = N(mu2, s2^2), -inf when not positive."""
    # Privacy loss L(y) = log p1(y) - log p2(y) = a y^2 + b y + c.
    a = 0.5 * (s2**-2 - s1**-2)
    b = mu1 / s1**2 - mu2 / s2**2
    c = 0.5 * ((mu2 / s2) ** 2 - (mu1 / s1) ** 2) + math.log(s2) - math.log(s1)
    logcdf = stats.norm.logcdf
    if a == 0:
        if b == 0:
            return -math.inf
        # {L > eps} is a half-line; P(Y > t) for Y ~ N(mu, s) equals Phi((mu - t) / s).
        cut = (eps - c) / b
        sign = 1.0 if b > 0 else -1.0
        log_p1 = float(logcdf(sign * (mu1 - cut) / s1))
        log_p2 = float(logcdf(sign * (mu2 - cut) / s2))
    else:
        disc = b * b - 4 * a * (c - eps)
        if disc <= 0:
            return -math.inf
        roots = sorted([(-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)])
        lo, hi = roots

        def mass(mu: float, s: float) -> float:
            if a > 0:  # loss above eps outside the roots
                return float(np.logaddexp(logcdf((lo - mu) / s), logcdf((mu - hi) / s)))
            # Loss above eps between the roots: P(lo < Y < hi), from whichever tail is
            # farther from the bulk so that the difference keeps its digits.
            a_lo, a_hi = (lo - mu) / s, (hi - mu) / s
            if a_lo + a_hi > 0:
                a_lo, a_hi = -a_hi, -a_lo
            upper, lower = float(logcdf(a_hi)), float(logcdf(a_lo))
            ratio = math.exp(lower - upper) if upper > -math.inf else 1.0
            return upper + math.log1p(-ratio) if ratio < 1.0 else -math.inf

        log_p1, log_p2 = mass(mu1, s1), mass(mu2, s2)
    # delta = P1[L > eps] - e^eps P2[L > eps]
    gap = eps + log_p2 - log_p1
    if gap >= 0 or log_p1 == -math.inf:
        return -math.inf
    return log_p1 + math.log1p(-math.exp(gap))


def _solve(max_log_delta: Callable[[float], float], delta: float) -> float:
    target = math.log(delta)
    if max_log_delta(0.0) <= target:
        return 0.0
    low, high = 0.0, 1.0
    while max_log_delta(high) > target:
        low, high = high, high * 10
        if high > 1e6:
            return math.inf
    return float(optimize.brentq(lambda e: max_log_delta(e) - target, low, high))


def epsilon_two_gaussians(mu1: float, s1: float, mu2: float, s2: float, delta: float) -> float:
    """Smallest epsilon with delta(eps) <= delta in both directions between two Gaussians."""
    delta = check_delta(delta)
    if not (s1 > 0 and s2 > 0):
        return math.inf if mu1 != mu2 or s1 != s2 else 0.0

    def worst(eps: float) -> float:
        return max(_log_delta(mu1, s1, mu2, s2, eps), _log_delta(mu2, s2, mu1, s1, eps))

    return _solve(worst, delta)


def epsilon_estimate(mean: float, std: float, dim: int, delta: float) -> float:
    """The paper's estimate: closed-form null vs N(mean, std^2) fitted to the seen cosines."""
    delta = check_delta(delta)
    if dim >= EXACT_NULL_BELOW:
        return epsilon_two_gaussians(0.0, dim**-0.5, mean, std, delta)
    if mean <= 0:
        return 0.0  # the canaries are not even positively correlated: no evidence of leakage
    if std <= 0:
        return math.inf
    half = (dim - 1) / 2
    # Search thresholds between where FPR or FNR would exceed 1 - delta.
    low = 2 * float(stats.beta.ppf(delta, half, half)) - 1
    high = float(stats.norm.ppf(1 - delta, loc=mean, scale=std))
    grid = np.linspace(low, high, _GRID)
    log_fpr = null_log_cdf(-grid, dim)
    fnr = stats.norm.cdf(grid, loc=mean, scale=std)
    return float(np.max(epsilon_from_rates(log_fpr, fnr, delta)))


def gdp_epsilon(mu: float, delta: float) -> float:
    """Epsilon of mu-GDP at ``delta`` (the Gaussian mechanism with sensitivity/sigma = mu)."""
    delta = check_delta(delta)
    if mu <= 0:
        return 0.0

    def log_delta(eps: float) -> float:
        value = special.ndtr(-eps / mu + mu / 2) - math.exp(eps) * special.ndtr(-eps / mu - mu / 2)
        return math.log(value) if value > 0 else -math.inf

    return _solve(log_delta, delta)


def _log_delta_many(mu1: Floats, s1: Floats, mu2: Floats, s2: Floats, eps: Floats) -> Floats:
    """Vectorised :func:`_log_delta`: log delta(eps) from N1 to N2, elementwise."""
    # Degenerate lanes (no roots, a = b = 0) produce NaN and inf on the way; they are masked
    # out at the end, so their warnings are noise.
    with np.errstate(divide="ignore", invalid="ignore"):
        return _log_delta_lanes(mu1, s1, mu2, s2, eps)


def _log_delta_lanes(mu1: Floats, s1: Floats, mu2: Floats, s2: Floats, eps: Floats) -> Floats:
    a = 0.5 * (s2**-2 - s1**-2)
    b = mu1 / s1**2 - mu2 / s2**2
    c = 0.5 * ((mu2 / s2) ** 2 - (mu1 / s1) ** 2) + np.log(s2) - np.log(s1)
    disc = b * b - 4 * a * (c - eps)
    root = np.sqrt(np.maximum(disc, 0.0))
    # Stable roots of a y^2 + b y + (c - eps): one of them stays finite as a -> 0, where {L > eps}
    # becomes a half-line (the other root runs off to +-inf, and its tail mass to 0).
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (b + np.where(b >= 0, root, -root))
        r1 = q / a
        r2 = (c - eps) / q
    lo, hi = np.minimum(r1, r2), np.maximum(r1, r2)
    log_ndtr = special.log_ndtr

    def mass(mu: Floats, s: Floats) -> Floats:
        outside = np.logaddexp(log_ndtr((lo - mu) / s), log_ndtr((mu - hi) / s))
        # Between the roots: take the tail farther from the bulk so the difference keeps digits.
        a_lo, a_hi = (lo - mu) / s, (hi - mu) / s
        flip = a_lo + a_hi > 0
        a_lo, a_hi = np.where(flip, -a_hi, a_lo), np.where(flip, -a_lo, a_hi)
        upper, lower = log_ndtr(a_hi), log_ndtr(a_lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            between = upper + np.log1p(-np.exp(lower - upper))
        return np.asarray(np.where(a >= 0, outside, between), dtype=np.float64)

    log_p1, log_p2 = mass(mu1, s1), mass(mu2, s2)
    gap = eps + log_p2 - log_p1
    with np.errstate(divide="ignore", invalid="ignore"):
        value = log_p1 + np.log1p(-np.exp(np.minimum(gap, 0.0)))
    dead = (disc <= 0) | (gap >= 0) | ~np.isfinite(log_p1) | ((a == 0) & (b == 0))
    return np.asarray(np.where(dead, -np.inf, value), dtype=np.float64)


def epsilon_two_gaussians_many(
    mu1: npt.ArrayLike, s1: npt.ArrayLike, mu2: npt.ArrayLike, s2: npt.ArrayLike, delta: float
) -> Floats:
    """:func:`epsilon_two_gaussians` for arrays of pairs at once (bootstraps, simulations).

    Bisection instead of brentq, so that thousands of pairs cost about a hundred array passes;
    it agrees with the scalar version to about 1e-9 relative.
    """
    delta = check_delta(delta)
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (mu1, s1, mu2, s2)))
    m1, d1, m2, d2 = (v.ravel() for v in arrays)
    if not ((d1 > 0) & (d2 > 0)).all():
        raise ValueError("standard deviations must be > 0")
    target = math.log(delta)

    def worst(eps: Floats) -> Floats:
        return np.maximum(
            _log_delta_many(m1, d1, m2, d2, eps), _log_delta_many(m2, d2, m1, d1, eps)
        )

    low = np.zeros(m1.size)
    high = np.ones(m1.size)
    # Bracket: double the upper end until delta(eps) falls to the target (or eps reaches 2^40).
    for _ in range(40):
        above = worst(high) > target
        if not above.any():
            break
        low = np.where(above, high, low)
        high = np.where(above, high * 2, high)
    unbounded = worst(high) > target
    for _ in range(64):
        mid = 0.5 * (low + high)
        above = worst(mid) > target
        low = np.where(above, mid, low)
        high = np.where(above, high, mid)
    result = np.where(worst(np.zeros(m1.size)) <= target, 0.0, high)
    result = np.where(unbounded, np.inf, result)
    return np.asarray(result.reshape(arrays[0].shape), dtype=np.float64)
