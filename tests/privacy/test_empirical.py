"""The one-shot estimators: the reference code's regression constants and known closed forms."""

from __future__ import annotations

import dp_accounting as dpa
import numpy as np
import pytest
from scipy import stats

from fedft.privacy.empirical import (
    epsilon_estimate,
    epsilon_lower_bound,
    epsilon_lower_bound_null,
    epsilon_two_gaussians,
    epsilon_two_gaussians_many,
    gdp_epsilon,
    null_log_cdf,
)

SEED = 0xBAD5EED


def test_lower_bound_constant() -> None:
    rng = np.random.default_rng(SEED)
    seen = rng.normal(1.0, 1.0, 100)
    unseen = rng.normal(0.0, 1.0, 100)
    assert epsilon_lower_bound(seen, unseen, 1e-2, 1e-2) == pytest.approx(0.6839449, abs=1e-7)


@pytest.mark.parametrize(("dim", "expected"), [(200, 1.394838), (2000, 1.3880321)])
def test_lower_bound_closed_form_null_constants(dim: int, expected: float) -> None:
    sigma = dim**-0.5
    seen = np.random.default_rng(SEED).normal(sigma, sigma, 100)
    assert epsilon_lower_bound_null(seen, dim, 1e-2, 1e-2) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("dim", "expected"), [(200, 2.375326), (2000, 2.317789)])
def test_estimate_constants(dim: int, expected: float) -> None:
    sigma = dim**-0.5
    assert epsilon_estimate(sigma, sigma, dim, 1e-2) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_equal_variances_are_gdp(mu: float) -> None:
    expected = dpa.get_epsilon_gaussian(1 / mu, 1e-5)
    assert gdp_epsilon(mu, 1e-5) == pytest.approx(expected, rel=1e-6)
    assert epsilon_two_gaussians(0.0, 1.0, mu, 1.0, 1e-5) == pytest.approx(expected, rel=1e-6)


def test_unequal_variances_match_monte_carlo_delta() -> None:
    rng = np.random.default_rng(SEED)
    mu1, s1, mu2, s2, delta = 0.3, 1.0, 1.4, 1.7, 0.05
    eps = epsilon_two_gaussians(mu1, s1, mu2, s2, delta)
    worst = 0.0
    for (ma, sa), (mb, sb) in (((mu1, s1), (mu2, s2)), ((mu2, s2), (mu1, s1))):
        y = rng.normal(ma, sa, 400_000)
        loss = stats.norm.logpdf(y, ma, sa) - stats.norm.logpdf(y, mb, sb)
        worst = max(worst, float(np.mean(np.maximum(0, 1 - np.exp(eps - loss)))))
    assert worst == pytest.approx(delta, abs=2e-3)


def test_exact_null_is_close_to_gaussian_at_999() -> None:
    t = np.linspace(-0.1, 0.1, 11)
    exact = np.exp(null_log_cdf(t, 999))
    assert np.allclose(exact, stats.norm.cdf(t, scale=999**-0.5), atol=1e-3)


def test_lower_bound_grows_with_alpha_and_is_affine_invariant() -> None:
    rng = np.random.default_rng(SEED)
    seen, unseen = rng.normal(1.0, 0.5, 100), rng.normal(0.0, 0.5, 100)
    bounds = [epsilon_lower_bound(seen, unseen, a, 1e-5) for a in np.logspace(-3, -1, 6)]
    assert np.all(np.diff(bounds) >= 0)
    moved = epsilon_lower_bound(seen * 2.7 + 3.1, unseen * 2.7 + 3.1, 1e-2, 1e-5)
    assert moved == pytest.approx(epsilon_lower_bound(seen, unseen, 1e-2, 1e-5))


def test_vectorised_two_gaussians_agree_with_the_scalar_ones() -> None:
    rng = np.random.default_rng(SEED)
    mu1, s1 = rng.uniform(-1, 1, 60), rng.uniform(0.5, 2, 60)
    mu2, s2 = rng.uniform(-1, 4, 60), rng.uniform(0.5, 2, 60)
    s1[:10] = s2[:10] = 1.0  # equal variances: the half-line case
    many = epsilon_two_gaussians_many(mu1, s1, mu2, s2, 1e-5)
    one = [epsilon_two_gaussians(*args, 1e-5) for args in zip(mu1, s1, mu2, s2, strict=True)]
    assert many == pytest.approx(one, rel=1e-8, abs=1e-10)
    assert epsilon_two_gaussians_many(0.0, 1.0, 0.0, 1.0, 1e-5) == 0.0
