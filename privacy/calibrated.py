"""The audit's headline: a calibrated empirical epsilon, its interval, and what it says.

Why not the paper's estimate as the headline. Andrew et al. report the epsilon between the
null N(0, 1/d) and a Gaussian with the *fitted* mean and standard deviation of the inserted
canaries' cosines. Under the Gaussian mechanism the seen cosines' true variance is the null's
(to O(n/d)), and at small delta that two-Gaussian epsilon has a minimum exactly there: any
error in the fitted std, in either direction, raises it (mu = 0.745, delta = 1e-5: 3.12 at std
ratio 1, 3.88 at 1.04, 4.07 at 0.96). With a few hundred canaries the sample std is off by a
few percent, so the estimate is biased upwards, and a percentile bootstrap of a biased
statistic inherits the bias: its interval misses the truth.

What we do instead: an equal-variance test with a fallback.

1. Put the cosines in null units, x = sqrt(d) * cos (the null has mean 0 and variance exactly
   1 for every d; below d = 1000 it is a scaled Beta rather than a Gaussian, and the fit is
   an approximation there). Test the seen variance against 1 (chi-square, two-sided). Only
   when it differs beyond ``VARIANCE_TEST_LEVEL`` is the equal-variance model given up.
2. Equal variances (the normal case): the seen cosines are N(mu, 1) vs the null N(0, 1), i.e.
   mu-GDP, whose epsilon is increasing in mu. mu is the seen mean; its t interval (with the
   sample std, so a slightly wrong variance does not make it overconfident) maps through that
   monotone function into an epsilon interval with the same coverage. The median of the
   estimate is the epsilon of the median of mu: unbiased in the median.
3. When every inserted canary is in every round (sampling rate 1), the other inserted canaries
   add their own energy, about mu^2 n / d in null units, to the norm of the model delta and so
   shrink every cosine by (1 + mu^2 n / d)^-1/2. The auditor knows n and d, so this is undone:
   mu = xbar / sqrt(1 - xbar^2 n / d). It is the paper's n = o(d) assumption made explicit.
   The real clients' updates shrink the cosines too; that is not undone, because an adversary
   who sees only the release faces it as well (it is part of the canary threat model).
4. Unequal variances (a non-Gaussian mechanism, or a statistic that is not what we think): the
   two-Gaussian fit, with a parametric bootstrap interval (mean and variance redrawn from
   their sampling distributions), because away from equal variances it is smooth in the std
   and that bias is small.

The verdict compares the interval with the analytical epsilon of the ledger, which bounds
every adversary of every threat model: an interval entirely above it means the release
leaked more than the accountant says the mechanism allows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from fedft.privacy.empirical import epsilon_two_gaussians_many

EQUAL_VARIANCE = "equal-variance (mu-GDP) fit, t interval"
TWO_GAUSSIAN = "two-Gaussian fit, parametric bootstrap (seen variance differs from the null's)"
# Two-sided level of the seen-variance test: 1% keeps the fallback rare when variances are
# equal, so the headline's coverage stays near nominal.
VARIANCE_TEST_LEVEL = 0.01
BOOTSTRAP = 400

CONSISTENT = "consistent"
BELOW = "below"
ABOVE = "above"


@dataclass(frozen=True)
class Headline:
    """The calibrated estimate of one run: epsilon, its interval, and how it was made."""

    epsilon: float
    low: float
    high: float
    method: str
    mu: float
    mu_low: float
    mu_high: float
    variance_ratio: float
    variance_p: float
    canaries_to_halve: int

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``audit.json``."""
        return asdict(self)


def _gdp(mu: npt.ArrayLike, delta: float) -> npt.NDArray[np.float64]:
    """Epsilon of mu-GDP, elementwise; 0 where mu <= 0 (no evidence of any leak), inf at inf."""
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 0.0)
    out = np.where(np.isinf(mu), np.inf, 0.0)
    positive = (mu > 0) & np.isfinite(mu)
    if positive.any():
        m = mu[positive]
        out[positive] = epsilon_two_gaussians_many(0.0, 1.0, m, 1.0, delta)
    return out


def _undo_interference(xbar: npt.ArrayLike, seen: int, dim: int) -> npt.NDArray[np.float64]:
    """The GDP mu from the shrunk seen mean: xbar = mu / sqrt(1 + mu^2 n / d), solved for mu."""
    x = np.asarray(xbar, dtype=np.float64)
    room = 1 - np.maximum(x, 0) ** 2 * seen / dim
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(room > 0, x / np.sqrt(np.where(room > 0, room, 1.0)), np.inf)
    return np.asarray(np.where(x <= 0, x, mu), dtype=np.float64)


def headline(
    seen_cosines: npt.ArrayLike,
    dim: int,
    delta: float,
    *,
    every_round: bool = False,
    level: float = 0.95,
    seed: int = 0,
) -> Headline:
    """The calibrated empirical epsilon from the inserted canaries' final-model cosines.

    ``every_round`` says each inserted canary was in every round (sampling rate 1), which lets
    the other canaries' share of the delta's norm be undone. See the module docstring for why.
    """
    x = np.asarray(seen_cosines, dtype=np.float64) * math.sqrt(dim)
    n = x.size
    if n < 2:
        raise ValueError("the estimate needs at least 2 inserted canaries")
    mean, std = float(x.mean()), float(x.std(ddof=1))
    if std == 0:  # identical cosines: no noise at all, or a degenerate record
        eps = math.inf if mean > 0 else 0.0
        return Headline(eps, eps, eps, EQUAL_VARIANCE, mean, mean, mean, 0.0, 0.0, n)
    chi2 = (n - 1) * std**2
    cdf = float(stats.chi2.cdf(chi2, n - 1))
    p_value = min(1.0, 2 * min(cdf, 1 - cdf))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    xs = np.array([mean, mean - half, mean + half])
    mus = _undo_interference(xs, n, dim) if every_round else xs
    if p_value >= VARIANCE_TEST_LEVEL:
        eps, low, high = (float(e) for e in _gdp(mus, delta))
        method = EQUAL_VARIANCE
        halve = _canaries_to_halve(mean, std, n, dim, delta, level=level, every_round=every_round)
    else:
        rng = np.random.default_rng(seed)
        means = mean + std / math.sqrt(n) * rng.standard_normal(BOOTSTRAP)
        stds = std * np.sqrt(rng.chisquare(n - 1, BOOTSTRAP) / (n - 1))
        point = epsilon_two_gaussians_many(0.0, 1.0, mean, std, delta)
        boots = epsilon_two_gaussians_many(0.0, 1.0, means, stds, delta)
        tail = 50 * (1 - level)
        eps = float(point)
        low, high = (float(v) for v in np.percentile(boots, [tail, 100 - tail]))
        method = TWO_GAUSSIAN
        halve = 4 * n  # the interval shrinks as 1 / sqrt(n)
    return Headline(
        epsilon=eps,
        low=low,
        high=high,
        method=method,
        mu=float(mus[0]),
        mu_low=float(mus[1]),
        mu_high=float(mus[2]),
        variance_ratio=std**2,
        variance_p=p_value,
        canaries_to_halve=halve,
    )


def _canaries_to_halve(
    mean: float, std: float, n: int, dim: int, delta: float, *, level: float, every_round: bool
) -> int:
    """Inserted canaries (as many unseen) at which the epsilon interval would be half as wide.

    Not simply 4n: epsilon is convex in mu and the lower end stops at 0, so the width in
    epsilon shrinks faster or slower than the width in mu. Assumes the same mean and spread.
    """
    sizes = np.unique(np.ceil(n * np.geomspace(1.0, 64.0, 80)).astype(np.int64))
    halves = stats.t.ppf(0.5 + level / 2, sizes - 1) * std / np.sqrt(sizes)
    lows, highs = mean - halves, mean + halves
    if every_round:
        lows, highs = _undo_interference(lows, n, dim), _undo_interference(highs, n, dim)
    ends = _gdp(np.concatenate([highs, lows]), delta)  # one bisection for both ends
    widths = ends[: sizes.size] - ends[sizes.size :]
    if not math.isfinite(widths[0]) or widths[0] <= 0:
        return 4 * n
    enough = np.nonzero(widths <= widths[0] / 2)[0]
    return int(sizes[enough[0]]) if enough.size else int(sizes[-1])


def verdict(low: float, high: float, analytical: float | None) -> dict[str, str]:
    """Where the interval lies against the ledger's epsilon, as a code and in words."""
    if analytical is None or not math.isfinite(analytical):
        return {
            "code": CONSISTENT,
            "text": "no finite analytical epsilon to compare with (a round without noise)",
        }
    if low > analytical:
        return {
            "code": ABOVE,
            "text": (
                "ABOVE the analytical epsilon beyond sampling error: the mechanism may not do "
                "what the ledger says (check the noise actually added, the clipping and the "
                "sampling)"
            ),
        }
    if high < analytical:
        return {
            "code": BELOW,
            "text": (
                "below the analytical epsilon: normal, the canary threat model (one release, "
                "random-direction canaries) is weaker than the accountant's worst case"
            ),
        }
    return {"code": CONSISTENT, "text": "consistent with the analytical epsilon"}
