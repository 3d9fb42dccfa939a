"""Clipping, the CSPRNG Gaussian, and the adaptive clip rule (with Flower's inverted sign)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedft.core.errors import UsageError
from fedft.privacy.mechanisms import (
    AdaptiveClip,
    SecureGaussian,
    clip_l2,
    update_noise_multiplier,
)


def test_clip_scales_long_vectors_only() -> None:
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    clipped, within = clip_l2(v, 1.0)
    assert not within
    assert float(torch.linalg.vector_norm(clipped)) == pytest.approx(1.0)
    same, within = clip_l2(v, 5.0)
    assert within
    assert torch.equal(same, v)
    with pytest.raises(ValueError, match="NaN"):
        clip_l2(torch.tensor([math.nan]), 1.0)


def test_secure_gaussian_moments_and_freshness() -> None:
    noise = SecureGaussian()
    a = noise.normal(200_001, 2.0)
    b = noise.normal(200_001, 2.0)
    assert a.shape == (200_001,)
    assert abs(float(a.mean())) < 0.02
    assert float(a.std()) == pytest.approx(2.0, rel=0.01)
    assert not torch.equal(a, b)
    # Gaussian tails: about 4.55 % beyond two standard deviations.
    assert float((a.abs() > 4.0).double().mean()) == pytest.approx(0.0455, abs=0.003)


def test_fixed_key_is_reproducible_for_tests() -> None:
    key = bytes(range(32))
    assert torch.equal(SecureGaussian(key).normal(10, 1.0), SecureGaussian(key).normal(10, 1.0))


@pytest.mark.parametrize(("m", "expected"), [(100, 1.005038), (20, 1.154701)])
def test_noise_split_for_adaptive_clipping(m: int, expected: float) -> None:
    assert update_noise_multiplier(1.0, m / 20) == pytest.approx(expected, abs=1e-6)


def test_noise_split_refuses_too_much_noise() -> None:
    with pytest.raises(UsageError, match="too large"):
        update_noise_multiplier(1.0, 0.2)


def _replay(sign: float) -> float:
    """200 rounds of 100 clients with median update norm 1; sign -1 is Flower 1.42's rule."""
    rng = np.random.default_rng(0)
    clip = AdaptiveClip(0.1, target_quantile=0.5, lr=0.2)
    for _ in range(200):
        norms = rng.lognormal(0.0, 0.5, 100)
        unclipped = int((norms <= clip.clip).sum())
        if sign < 0:
            # Flower counts the clipped clients but applies Andrew's sign to them.
            unclipped = 100 - unclipped
        clip.update(unclipped, 100, 100.0, 0.0)
    return clip.clip


def test_adaptive_clip_tracks_the_median() -> None:
    assert _replay(+1) == pytest.approx(1.0, rel=0.15)
    assert _replay(-1) < 1e-6  # the inverted sign collapses the clip norm
