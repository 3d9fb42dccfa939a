"""The ``--secagg`` settings of a run, validated before anything loads (no numpy, no torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedft.core.errors import UsageError

RING_CHOICES = (32, 64)


@dataclass(frozen=True)
class SecAggSettings:
    """How each round's secure sum is set up; zero or None picks the default.

    ``neighbours`` is the graph degree k (default 2 log2 n for n participants, even),
    ``threshold`` the shares t that rebuild a secret (default k/2 + 1), ``clip`` the bound every
    coordinate of an update vector is clipped to before encoding, and ``ring_bits`` the ring
    (2^32 or 2^64). ``clip`` and ``ring_bits`` default to the strategy's own
    (``LinearUpdates.secagg_clip`` and ``secagg_ring_bits``): adapter deltas are small, seed
    coefficients are not.
    """

    neighbours: int = 0
    threshold: int = 0
    clip: float | None = None
    ring_bits: int | None = None

    def __post_init__(self) -> None:
        k, t = self.neighbours, self.threshold
        if k < 0 or (k and (k < 2 or k % 2)):
            raise UsageError(f"--secagg-neighbours must be an even number >= 2, got {k}")
        if t < 0:
            raise UsageError(f"--secagg-threshold must be >= 1, got {t}")
        if k and t and not k // 2 < t <= k:
            raise UsageError(
                f"--secagg-threshold {t} must lie in ({k // 2}, {k}] for {k} neighbours: at or "
                "below half, a server could gather both kinds of shares of one client"
            )
        if self.clip is not None and not (self.clip > 0 and math.isfinite(self.clip)):
            raise UsageError(f"--secagg-clip must be positive and finite, got {self.clip}")
        if self.ring_bits is not None and self.ring_bits not in RING_CHOICES:
            raise UsageError(f"--secagg-ring must be 32 or 64, got {self.ring_bits}")


def secagg_refusal(
    *, dp: bool, robust: bool, participation: str, mode: str = "sync", dp_adaptive: bool = False
) -> str | None:
    """Say in one line why ``--secagg`` cannot run with the other settings, or None."""
    if robust:
        return (
            "--robust needs every update in the clear, and under --secagg the server sees only "
            "their sum: choose one"
        )
    if dp and dp_adaptive:
        return (
            "--dp-adaptive learns from each device's clipped-or-not bit, which --secagg hides: "
            "use a fixed --dp-clip"
        )
    if participation != "none":
        return "--participation fedau does not combine with --secagg yet"
    if mode != "sync":
        return "--secagg runs synchronous rounds only (--mode sync)"
    return None
