"""Tests for FedKSeed-Pro's seed importance levels and the sampling distribution they define."""

from __future__ import annotations

import math

import pytest
import torch

from fedft.strategies.fedkseed_pro.scores import LEVELS, importance_levels, probabilities


def test_levels_span_0_to_255_and_keep_the_score_order() -> None:
    abs_sum = torch.tensor([0.0, 2.0, 6.0, 1.5, 0.9, 4.0], dtype=torch.float64)
    counts = torch.tensor([0, 1, 2, 0, 2, 7])
    score = abs_sum / (counts + 1)  # 0, 1, 2, 1.5, 0.3, 0.5
    levels = importance_levels(abs_sum, counts)
    assert levels.dtype == torch.uint8
    assert levels.shape == (6,)
    assert int(levels.max()) == LEVELS == 255
    assert int(levels.min()) == 0
    assert int(levels[2]) == 255
    assert int(levels[0]) == 0
    order = torch.argsort(score, stable=True)
    assert torch.equal(torch.argsort(levels.to(torch.int64), stable=True), order)
    # Each level is the min-max normalised score on 255 steps, to within the rounding.
    expected = (score - score.min()) / (score.max() - score.min()) * 255
    assert (levels.double() - expected).abs().max() <= 0.5 + 1e-6


def test_history_starts_with_one_zero() -> None:
    # A seed's mean includes the initial 0: 3 over 2 draws is 1.0, as is 1 over no draws.
    levels = importance_levels(torch.tensor([3.0, 1.0, 0.5]), torch.tensor([2, 0, 0]))
    assert levels.tolist() == [255, 255, 0]


def test_float32_scores_work_too() -> None:
    levels = importance_levels(torch.tensor([0.0, 0.25, 1.0]), torch.tensor([0, 0, 0]))
    assert levels.tolist() == [0, 64, 255]  # round(63.75)


@pytest.mark.parametrize(
    ("abs_sum", "counts"),
    [([0.0, 0.0, 0.0], [0, 0, 0]), ([0.0, 0.0], [5, 9]), ([2.0, 4.0], [1, 3]), ([7.5], [2])],
)
def test_equal_scores_give_equal_levels(abs_sum: list[float], counts: list[int]) -> None:
    levels = importance_levels(torch.tensor(abs_sum), torch.tensor(counts))
    assert len(set(levels.tolist())) == 1
    assert bool(torch.isfinite(probabilities(levels)).all())


def test_probabilities_are_a_distribution_with_bounded_ratio() -> None:
    levels = importance_levels(
        torch.rand(1024, generator=torch.Generator().manual_seed(0)), torch.zeros(1024)
    )
    p = probabilities(levels)
    assert p.dtype == torch.float64
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((p > 0).all())
    ratio = float(p.max() / p.min())
    assert ratio <= math.e * (1 + 1e-12)
    assert ratio == pytest.approx(math.e, rel=1e-12)  # levels 0 and 255 are both present
    # Monotone in the level.
    order = torch.argsort(levels.to(torch.int64))
    assert bool((p[order].diff() >= 0).all())


def test_probabilities_of_equal_levels_are_uniform() -> None:
    p = probabilities(torch.full((8,), 37, dtype=torch.uint8))
    assert torch.allclose(p, torch.full((8,), 1 / 8, dtype=torch.float64), rtol=0, atol=1e-15)


def test_probabilities_follow_softmax_of_level_over_255() -> None:
    levels = torch.tensor([0, 51, 255], dtype=torch.uint8)
    weights = [math.exp(v / 255) for v in (0, 51, 255)]
    expected = torch.tensor([w / sum(weights) for w in weights], dtype=torch.float64)
    torch.testing.assert_close(probabilities(levels), expected, rtol=1e-12, atol=0)
