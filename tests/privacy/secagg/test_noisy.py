"""Distributed DP's encoding: signed sums, each device's Skellam share, survivors enforced."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedft.core.errors import ProtocolError
from fedft.privacy.secagg.errors import BelowThresholdError, EncodingOverflowError
from fedft.privacy.secagg.messages import UnmaskRequest
from fedft.privacy.secagg.noisy import MAX_POISSON_RATE, NoisyEncoding, skellam
from fedft.privacy.secagg.simulate import secure_sum
from fedft.privacy.secagg.task import SecureTask, noise_refusal

from .conftest import make_round, share


def test_without_noise_signed_sums_decode_exactly() -> None:
    enc = NoisyEncoding(32, 8, 4.0, 1.0, 0.0, 2, 50)
    rng = np.random.default_rng(0)
    xs = [rng.integers(-4, 5, size=50).astype(np.float64) for _ in range(6)]
    total = sum(enc.encode(x, 1.0, rng) for x in xs)
    assert isinstance(total, np.ndarray)
    got, weight = enc.decode(total.astype(np.uint32), 6)
    assert np.array_equal(got, sum(xs))  # negative sums too: two's complement, signed decode
    assert weight == 6.0


def test_each_share_has_the_promised_variance_and_shares_add_up() -> None:
    draws = skellam(400.0, 200_000)
    assert draws.dtype == np.int64
    assert abs(float(draws.mean())) < 0.2
    assert float(draws.var()) == pytest.approx(400.0, rel=0.02)
    # Two fresh calls never repeat: the noise is OS-seeded, whoever seeded the rounding.
    assert not np.array_equal(skellam(400.0, 64), skellam(400.0, 64))
    assert not skellam(0.0, 10).any()


def test_a_noisy_sum_carries_every_survivors_share() -> None:
    n, length = 5, 40_000
    enc = NoisyEncoding.fit_noise(
        n, clip=1.0, length=length, noise_multiplier=1.0, survivors=4, ring_bits=64
    )
    assert enc.variance == pytest.approx(enc.l2_sensitivity**2 / 4)
    rng = np.random.default_rng(1)
    total = sum(enc.encode(np.zeros(length), 1.0, rng) for _ in range(n))
    assert isinstance(total, np.ndarray)
    noise, weight = enc.decode(total, n)
    assert weight == n  # the weight rides without noise
    want = math.sqrt(n * enc.variance) / enc.scale  # 5 shares of variance (z * l2)^2 / 4
    assert float(noise.std()) == pytest.approx(want, rel=0.02)
    assert abs(float(noise.mean())) < 5 * want / math.sqrt(length)
    assert enc.noise_multiplier(n) == pytest.approx(math.sqrt(5 / 4))


def test_the_fit_keeps_the_noisy_sum_inside_the_ring() -> None:
    for ring in (32, 64):
        enc = NoisyEncoding.fit_noise(
            100, clip=0.5, length=1000, noise_multiplier=2.0, survivors=70, ring_bits=ring
        )
        assert enc.headroom(100) > 0
        assert enc.variance / 2 <= MAX_POISSON_RATE  # where numpy's sampler is accurate
        # One more fractional bit would break one of the two.
        scale = 2.0 ** (enc.frac_bits + 1)
        variance = (2.0 * (scale * 0.5 + math.sqrt(1000))) ** 2 / 70
        if variance / 2 <= MAX_POISSON_RATE:
            finer = NoisyEncoding(ring, enc.frac_bits + 1, 0.5, 1.0, variance, 70, 1000)
            assert finer.headroom(100) <= 0
    # The L2 sensitivity counts the rounding of every value, the L1 bound the integers.
    enc = NoisyEncoding(64, 10, 1.0, 1.0, 1.0, 2, 100)
    assert enc.l2_sensitivity == 1024 + 10
    assert enc.l1_sensitivity == pytest.approx(10 * 1034)


def test_too_few_participants_for_the_survivors_open_no_round() -> None:
    with pytest.raises(EncodingOverflowError, match="--dp-min-survivors"):
        NoisyEncoding.fit_noise(3, clip=1.0, length=10, noise_multiplier=1.0, survivors=4)


def _noisy_round(n: int, survivors: int):  # type: ignore[no-untyped-def]
    enc = NoisyEncoding.fit_noise(
        n, clip=1.0, length=8, noise_multiplier=1.0, survivors=survivors, ring_bits=64
    )
    return make_round(n, encoding=enc)


def test_the_server_never_unmasks_fewer_shares_than_calibrated() -> None:
    vectors = [np.full(8, 0.1)] * 6
    enc = NoisyEncoding.fit_noise(6, clip=1.0, length=8, noise_multiplier=1.0, survivors=5)
    total, _ = secure_sum(vectors, encoding=enc, dropouts={"unmask": {0}})
    assert total.shape == (8,)  # 5 masked inputs (one dropped after): released
    with pytest.raises(BelowThresholdError, match="less noise"):
        secure_sum(vectors, encoding=enc, dropouts={"mask": {0, 1}})


def test_a_device_refuses_to_unmask_a_sum_with_too_few_shares() -> None:
    r = _noisy_round(6, 5)
    for i, msg in share(r).items():
        r.server.receive_masked(r.clients[i].masked_input(msg, np.zeros(8), 1.0))
    requests = r.server.close_masked()
    assert {req.total for req in requests.values()} == {6}
    lying = UnmaskRequest(requests[0].survivors, requests[0].dropped, 4)
    with pytest.raises(BelowThresholdError, match="less noise"):
        r.clients[0].unmask(lying)
    assert r.clients[1].unmask(requests[1]).sender == 1


def _task(**noise: float) -> SecureTask:
    return SecureTask(
        session="run",
        round=1,
        participants=4,
        me=0,
        length=100,
        ring_bits=64,
        frac_bits=20,
        clip=0.05,
        neighbours=2,
        threshold=2,
        weight=1.0,
        l2_clip=0.05,
        **noise,  # type: ignore[arg-type]
    )


def test_a_device_checks_the_noise_a_task_promises() -> None:
    enc = NoisyEncoding.fit_noise(4, clip=0.05, length=100, noise_multiplier=1.0, survivors=3)
    noisy = _task(variance=enc.variance, survivors=3)
    noisy = SecureTask.from_config(
        {**noisy.to_config(), "secagg.frac_bits": enc.frac_bits}
    )  # as it travels
    assert noisy is not None
    assert noise_refusal(noisy, 1.0) is None
    assert noise_refusal(noisy, 0.0) is None
    assert "below 1.5" in str(noise_refusal(noisy, 1.5))
    assert "in the clear" in str(noise_refusal(None, 1.0))
    assert "no device noise" in str(noise_refusal(_task(), 1.0))
    assert noise_refusal(None, 0.0) is None  # no floor: any task


def test_a_malformed_noisy_task_is_a_protocol_error() -> None:
    config = _task(variance=1.0, survivors=3).to_config()
    for bad in ({"secagg.survivors": 9}, {"secagg.variance": -1.0}, {"secagg.survivors": 1}):
        with pytest.raises(ProtocolError, match="malformed"):
            SecureTask.from_config({**config, **bad})
