"""Distributed DP inside the secure sum: signed fixed point plus each device's Skellam share.

Under ``--dp-distributed`` no party ever holds a noiseless sum: each device encodes its clipped
update as signed integers, adds Skellam noise of variance ``(z * l2)^2 / survivors`` to every
coordinate, and masks the result. Skellam noise is closed under addition, so the sum of any
``m >= survivors`` shares is Skellam noise of variance at least ``(z * l2)^2``, the central
mechanism's. The unmask stage refuses to run with fewer survivors (the server's
``close_masked`` and each device's ``SecAggClient.unmask``, which trusts the survivor count
the server reports: a coordinator that follows the protocol cannot strip noise by dropping
devices; one that lies about the count is outside this model, as there is no consistency
round). ``l2`` is the L2 sensitivity in ring
units: the clipped norm times the scale, plus ``sqrt(length)`` for the rounding of each value.

Values travel as two's complement in the ring and the sum decodes as a signed integer, so
noise may push any coordinate below zero. ``check_headroom`` keeps the sum, noise included up
to :data:`TAIL` standard deviations, inside the ring's signed range.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .encoding import Encoding, stochastic_round
from .errors import EncodingOverflowError

# A sum is checked to fit with its noise this many standard deviations out: Skellam tails are
# no heavier than Gaussian ones at these variances, and P(|N(0,1)| > 40) is about 1e-350.
TAIL = 40.0
# numpy's Poisson sampler accepts rates up to about 9.2e18, but its variance drifts above
# about 1e12 (measured: +0.5% at 1e12, +42% at 1e16, +52% at 1e18); below 1e10 it is within
# sampling error. The fit lowers the scale instead: the rounding then costs a little noise.
MAX_POISSON_RATE = 1e10


@dataclass(frozen=True)
class NoisyEncoding(Encoding):
    """A round's encoding under distributed DP: every device adds its share of the noise.

    ``clip`` is the DP clip norm (each device clips its update to it, which bounds every value
    too), ``variance`` one device's Skellam variance in squared ring units, ``survivors`` the
    fewest devices whose shares add up to the round's noise, and ``length`` the vector's.
    """

    variance: float = 0.0
    survivors: int = 2
    length: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.variance >= 0 and math.isfinite(self.variance)):
            raise ValueError("variance must be finite and >= 0")
        if self.variance / 2 > MAX_POISSON_RATE:
            raise ValueError("variance too large for the Poisson sampler")
        if self.survivors < 1 or self.length < 1:
            raise ValueError("survivors and length must be positive")

    @classmethod
    def fit_noise(
        cls,
        summands: int,
        *,
        clip: float,
        length: int,
        noise_multiplier: float,
        survivors: int,
        ring_bits: int = 64,
    ) -> NoisyEncoding:
        """The encoding with the most fractional bits whose noisy sum of ``summands`` fits."""
        if not 1 <= survivors <= summands:
            raise EncodingOverflowError(
                f"{summands} participants cannot meet the {survivors} survivors the noise is "
                "calibrated for (lower --dp-min-survivors or sample more clients)"
            )
        for frac in range(52, -1, -1):
            scale = float(2**frac)
            l2 = scale * clip + math.sqrt(length)
            variance = (noise_multiplier * l2) ** 2 / survivors
            if variance / 2 > MAX_POISSON_RATE:
                continue
            encoding = cls(ring_bits, frac, clip, 1.0, variance, survivors, length)
            if encoding.headroom(summands) > 0:
                return encoding
        raise EncodingOverflowError(
            f"{summands} noisy summands do not fit a {ring_bits}-bit ring (use --secagg-ring 64)"
        )

    @property
    def l2_sensitivity(self) -> float:
        """One device's largest encoded L2 norm: its clipped norm scaled, plus rounding."""
        return self.scale * self.clip + math.sqrt(self.length)

    @property
    def l1_sensitivity(self) -> float:
        """One device's largest encoded L1 norm (integers: at most the squared L2 norm)."""
        l2 = self.l2_sensitivity
        return min(l2 * l2, math.sqrt(self.length) * l2)

    def noise_multiplier(self, survivors: int) -> float:
        """The realised noise std over the L2 sensitivity when ``survivors`` shares add up."""
        return math.sqrt(survivors * self.variance) / self.l2_sensitivity

    def headroom(self, summands: int) -> float:
        """How far the largest plausible |sum| stays below the signed range (negative: over)."""
        top = summands * (self.scale * self.clip + 1) + TAIL * math.sqrt(summands * self.variance)
        return min(2.0 ** (self.ring_bits - 1), 2.0**62) - top

    def check_headroom(self, summands: int) -> None:
        """Raise EncodingOverflowError unless ``summands`` noisy encodings sum without wrapping."""
        if self.headroom(summands) <= 0:
            raise EncodingOverflowError(
                f"{summands} noisy summands overflow a {self.ring_bits}-bit ring at "
                f"{self.frac_bits} fractional bits; lower frac_bits or use ring_bits=64"
            )

    def encode(
        self, vector: NDArray[np.floating], weight: float, rng: np.random.Generator
    ) -> NDArray[np.unsignedinteger]:
        """Encode ``weight * vector`` as signed values plus this device's noise (weight last).

        ``rng`` rounds; the noise comes from a generator seeded by the OS for every call, so
        whoever seeded ``rng`` (a reproducible simulation) still cannot predict it.
        """
        values = stochastic_round(self.scaled(vector, weight, 0.0), rng)
        ints = values.astype(np.int64)
        ints[:-1] += skellam(self.variance, ints.size - 1)
        return ints.astype(self.dtype)  # two's complement: wraps modulo 2^ring_bits

    def decode(
        self, total: NDArray[np.unsignedinteger], summands: int
    ) -> tuple[NDArray[np.float64], float]:
        """Decode a ring sum as signed values: (noisy sum of w * x, sum of w)."""
        signed = np.dtype(np.int32) if self.ring_bits == 32 else np.dtype(np.int64)
        raw = np.asarray(total, dtype=self.dtype).view(signed).astype(np.float64) / self.scale
        return raw[:-1], float(raw[-1])


def skellam(variance: float, size: int) -> NDArray[np.int64]:
    """``size`` symmetric Skellam draws of ``variance`` (Poisson minus Poisson), OS-seeded."""
    if variance <= 0:
        return np.zeros(size, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64DXSM(int.from_bytes(os.urandom(32), "big")))
    rate = variance / 2
    return rng.poisson(rate, size).astype(np.int64) - rng.poisson(rate, size).astype(np.int64)
