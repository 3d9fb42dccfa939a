"""Fixed-point encoding: exact for integers, unbiased for floats, headroom enforced."""

from __future__ import annotations

import numpy as np
import pytest

from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.errors import EncodingOverflowError


def test_integer_updates_and_weights_sum_exactly() -> None:
    enc = Encoding(32, 10, 8.0, 16.0)
    rng = np.random.default_rng(0)
    xs = [rng.integers(-8, 9, size=100).astype(np.float64) for _ in range(20)]
    ws = [float(w) for w in rng.integers(0, 17, size=20)]
    total = sum(enc.encode(x, w, rng) for x, w in zip(xs, ws, strict=True))
    assert isinstance(total, np.ndarray)
    s, weight = enc.decode(total.astype(np.uint32), 20)
    assert np.array_equal(s, sum(w * x for x, w in zip(xs, ws, strict=True)))
    assert weight == sum(ws)


def test_clipping_and_unbiased_stochastic_rounding() -> None:
    enc = Encoding(64, 4, 1.0, 1.0)
    rng = np.random.default_rng(1)
    q = enc.encode(np.array([5.0, -5.0, 0.3]), 1.0, rng)
    s, _ = enc.decode(q, 1)
    assert s[0] == 1.0
    assert s[1] == -1.0
    # 0.3 is not a multiple of 1/16: single draws err, the average does not.
    draws = np.stack([enc.decode(enc.encode(np.array([0.3]), 1.0, rng), 1)[0] for _ in range(4000)])
    assert np.all(np.abs(draws - 0.3) < 1 / 16)
    assert abs(draws.mean() - 0.3) < 0.003


def test_headroom_is_checked_for_the_number_of_summands() -> None:
    enc = Encoding(32, 20, 1.0, 1.0)  # span 2^21: at most 2047 summands in 2^32
    enc.check_headroom(2047)
    with pytest.raises(EncodingOverflowError, match="at most 2047"):
        enc.check_headroom(2048)
    fit = Encoding.fit(1000, clip=2.0, max_weight=3.0)
    fit.check_headroom(1000)
    assert Encoding(fit.ring_bits, fit.frac_bits + 1, 2.0, 3.0).span * 1000 >= 2**32


def test_bad_inputs_are_refused() -> None:
    enc = Encoding()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="weight"):
        enc.encode(np.zeros(3), 2.0, rng)
    with pytest.raises(ValueError, match="non-finite"):
        enc.encode(np.array([np.nan]), 1.0, rng)
    with pytest.raises(ValueError, match="ring_bits"):
        Encoding(ring_bits=16)
