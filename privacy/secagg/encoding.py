"""Fixed-point encoding of weighted update vectors into the ring Z/2^b (b = 32 or 64).

A client with update x and example weight w (0 <= w <= max_weight) encodes, per coordinate,

    q = stochastic_round((w * clip(x, -clip, clip) + max_weight * clip) * 2^frac_bits)

an integer in [0, span] with span = 2 * max_weight * clip * 2^frac_bits. It appends one more
element, stochastic_round(w * 2^frac_bits) in [0, span / 2], so the weight rides inside the
masked vector and the server learns only the summed weight. Folding the weight in before
encoding keeps every client's range fixed, so the ring must hold n * span: ``check_headroom``
raises when n summands could wrap around (the sum would then decode to garbage silently).

The server decodes a sum of m encodings as sum(q) / 2^frac_bits - m * max_weight * clip for the
coordinates and sum(q_w) / 2^frac_bits for the weight; the weighted mean is their ratio.
Stochastic rounding is unbiased, so each client adds error below 2^-frac_bits per coordinate
with mean zero. With integer ``clip`` and ``max_weight``, integer updates and integer weights
are encoded, and their sums decoded, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .errors import EncodingOverflowError


@dataclass(frozen=True)
class Encoding:
    """Public encoding parameters that every party of a round shares."""

    ring_bits: int = 32
    frac_bits: int = 16
    clip: float = 1.0
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.ring_bits not in (32, 64):
            raise ValueError(f"ring_bits must be 32 or 64, got {self.ring_bits}")
        if not 0 <= self.frac_bits <= 52:
            raise ValueError("frac_bits must lie in [0, 52] (float64 carries 53 bits)")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError("clip must be positive and finite")
        if not (self.max_weight > 0 and math.isfinite(self.max_weight)):
            raise ValueError("max_weight must be positive and finite")

    @classmethod
    def fit(
        cls, summands: int, *, clip: float = 1.0, max_weight: float = 1.0, ring_bits: int = 32
    ) -> Encoding:
        """Return the encoding with the most fractional bits that ``summands`` still fit."""
        if summands < 1:
            raise ValueError("summands must be positive")
        limit = min(2**ring_bits, 2**53)
        room = limit / (summands * 2 * max_weight * clip)
        frac = min(52, math.floor(math.log2(room)))
        # span rounds up, so the log estimate may be one bit too generous: step down.
        while frac >= 0 and summands * cls(ring_bits, frac, clip, max_weight).span >= limit:
            frac -= 1
        if frac < 0:
            raise EncodingOverflowError(f"{summands} summands do not fit a {ring_bits}-bit ring")
        return cls(ring_bits, frac, clip, max_weight)

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """The numpy dtype of a ring element (arithmetic wraps modulo 2^ring_bits)."""
        return np.dtype(np.uint32) if self.ring_bits == 32 else np.dtype(np.uint64)

    @property
    def scale(self) -> float:
        """The fixed-point scale 2^frac_bits."""
        return float(2**self.frac_bits)

    @property
    def offset(self) -> float:
        """What every encoded coordinate is shifted by before scaling (max_weight * clip)."""
        return self.max_weight * self.clip

    @property
    def span(self) -> int:
        """The largest value one client's encoded element can take."""
        return math.ceil(2 * self.offset * self.scale)

    def check_headroom(self, summands: int) -> None:
        """Raise EncodingOverflowError unless ``summands`` encodings always sum without wrapping.

        The float64 decode must also be exact, so the sum must stay below 2^53.
        """
        limit = min(2**self.ring_bits, 2**53)
        if summands * self.span >= limit:
            most = (limit - 1) // self.span
            raise EncodingOverflowError(
                f"{summands} summands of span {self.span} overflow a {self.ring_bits}-bit ring "
                f"(at most {most}); lower frac_bits, clip or max_weight, or use ring_bits=64"
            )

    def encode(
        self, vector: NDArray[np.floating], weight: float, rng: np.random.Generator
    ) -> NDArray[np.unsignedinteger]:
        """Encode a weighted update as ``len(vector) + 1`` ring elements (weight last)."""
        values = stochastic_round(self.scaled(vector, weight, self.offset), rng)
        np.clip(values, 0, self.span, out=values)  # guards float rounding at the top edge
        return values.astype(self.dtype)

    def scaled(
        self, vector: NDArray[np.floating], weight: float, offset: float
    ) -> NDArray[np.float64]:
        """``weight * clip(vector) + offset``, then ``weight``, all times the scale (floats)."""
        if not 0 <= weight <= self.max_weight:
            raise ValueError(f"weight {weight} outside [0, max_weight={self.max_weight}]")
        x = np.asarray(vector, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("the update has non-finite values")
        values = np.empty(x.size + 1, dtype=np.float64)
        np.clip(x.reshape(-1), -self.clip, self.clip, out=values[:-1])
        values[:-1] *= weight
        values[:-1] += offset
        values[-1] = weight
        values *= self.scale
        return values

    def decode(
        self, total: NDArray[np.unsignedinteger], summands: int
    ) -> tuple[NDArray[np.float64], float]:
        """Decode the ring sum of ``summands`` encodings: (sum of w * x, sum of w)."""
        raw = total.astype(np.float64) / self.scale
        return raw[:-1] - summands * self.offset, float(raw[-1])


def stochastic_round(values: NDArray[np.float64], rng: np.random.Generator) -> NDArray[np.float64]:
    """Round down, then up with probability equal to the fraction: unbiased."""
    low = np.floor(values)
    return low + (rng.random(values.size) < values - low)
