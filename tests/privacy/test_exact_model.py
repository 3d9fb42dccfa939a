"""The exact-model sampler agrees with drawing the d-dimensional vectors themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedft.privacy.exact_model import Floats, cosines, draw, gdp_mu, noise_for_mu


def direct(
    rng: np.random.Generator, dim: int, seen: int, unseen: int, *, z: float, rounds: int
) -> tuple[Floats, Floats]:
    """The mechanism itself: unit canaries and Gaussian noise in R^dim."""
    c = rng.standard_normal((seen + unseen, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    per_round = c[:seen].sum(axis=0) + z * rng.standard_normal((rounds, dim))
    final = per_round.sum(axis=0)
    return c @ final / np.linalg.norm(final), (
        c @ per_round.T / np.linalg.norm(per_round, axis=1)
    ).T


def test_moments_match_the_direct_simulation() -> None:
    dim, seen, unseen, rounds, z = 400, 40, 40, 3, 1.5
    rng = np.random.default_rng(3)
    exact = [cosines(draw(rng, dim, seen, unseen, rounds), z) for _ in range(300)]
    brute = [direct(rng, dim, seen, unseen, z=z, rounds=rounds) for _ in range(300)]
    for pick in (lambda f, p: f[:seen], lambda f, p: f[seen:], lambda f, p: p.max(axis=0)[:seen]):
        a = np.concatenate([pick(*e) for e in exact]) * math.sqrt(dim)
        b = np.concatenate([pick(*e) for e in brute]) * math.sqrt(dim)
        # 12,000 values each: standard errors of about 0.01 on the mean and the std.
        assert a.mean() == pytest.approx(b.mean(), abs=0.05)
        assert a.std() == pytest.approx(b.std(), abs=0.05)


def test_seen_cosines_sit_at_mu_and_unseen_at_the_null() -> None:
    rng = np.random.default_rng(0)
    mu, rounds, dim = 1.5, 5, 10**7
    final, _ = cosines(draw(rng, dim, 1000, 1000, rounds), noise_for_mu(mu, rounds))
    x = final * math.sqrt(dim)
    assert x[:1000].mean() == pytest.approx(mu, abs=0.1)
    assert x[1000:].std() == pytest.approx(1.0, abs=0.06)
    assert gdp_mu(noise_for_mu(mu, rounds), rounds) == pytest.approx(mu)


def test_dimension_must_hold_the_vectors() -> None:
    with pytest.raises(ValueError, match="dim"):
        draw(np.random.default_rng(0), 10, 5, 5, 1)
