"""Canary clients for the one-shot audit: seeded random unit directions in the update space.

Canary j's direction is the RNG contract's Irwin-Hall stream (``fedft.core.rng``) under a seed
derived from (audit seed, j), normalised to unit length. Canaries ``0..seen-1`` are inserted
into training like clients; ``seen..seen+unseen-1`` never are and give the null distribution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fedft.core.payload import Payload
from fedft.core.rng import derive_seed, perturbation

_CANARY_TAG = 0xCA4A7  # separates canary seeds from every other derived seed
_INCLUSION_TAG = 0x1AC1
# Cache every direction when they fit in this many float32 values (256 MiB); else regenerate.
CACHE_VALUES = 1 << 26


@dataclass(frozen=True)
class CanaryPlan:
    """Which canaries exist: their seed, how many are inserted, how many stay unseen."""

    seed: int
    seen: int
    unseen: int

    @property
    def total(self) -> int:
        """Seen plus unseen canaries."""
        return self.seen + self.unseen


def canary_seed(plan: CanaryPlan, index: int) -> int:
    """Return the RNG seed of canary ``index``."""
    return derive_seed(plan.seed, _CANARY_TAG, index)


def direction(plan: CanaryPlan, index: int, dim: int) -> torch.Tensor:
    """Return canary ``index`` as a float64 unit vector of length ``dim``."""
    z = perturbation(canary_seed(plan, index), 0, dim, "irwin_hall").to(torch.float64)
    unit: torch.Tensor = z / torch.linalg.vector_norm(z)
    return unit


def included(plan: CanaryPlan, server_round: int, index: int, rate: float) -> bool:
    """Whether seen canary ``index`` takes part in ``server_round`` (Poisson, like a client)."""
    if rate >= 1.0:
        return True
    draw = derive_seed(plan.seed, _INCLUSION_TAG, server_round, index)
    return draw < rate * 2.0**64


class CanaryBank:
    """The directions of a plan in a fixed dimension, cached when they fit in memory."""

    def __init__(self, plan: CanaryPlan, dim: int):
        self.plan = plan
        self.dim = dim
        self._matrix: torch.Tensor | None = None
        if plan.total * dim <= CACHE_VALUES:
            self._matrix = (
                torch.stack([direction(plan, j, dim).to(torch.float32) for j in range(plan.total)])
                if plan.total
                else torch.zeros(0, dim)
            )

    def vector(self, index: int) -> torch.Tensor:
        """Return canary ``index`` (float64, unit length)."""
        if self._matrix is not None:
            row = self._matrix[index].to(torch.float64)
            unit: torch.Tensor = row / torch.linalg.vector_norm(row)
            return unit
        return direction(self.plan, index, self.dim)

    def _rows(self) -> Iterator[torch.Tensor]:
        for j in range(self.plan.total):
            yield self.vector(j)

    def cosines(self, vector: torch.Tensor) -> torch.Tensor:
        """Cosine of every canary (seen first, then unseen) with ``vector``; 0 if it is 0."""
        v = vector.to(torch.float64)
        norm = float(torch.linalg.vector_norm(v))
        if norm == 0.0 or self.plan.total == 0:
            return torch.zeros(self.plan.total, dtype=torch.float64)
        if self._matrix is not None:
            rows = self._matrix.to(torch.float64)
            dots: torch.Tensor = rows @ v / torch.linalg.vector_norm(rows, dim=1)
        else:
            dots = torch.stack([torch.dot(row, v) for row in self._rows()])
        return dots / norm


@dataclass
class CanaryRecord:
    """What the audit needs from a run: the plan, the final model delta, per-round max cosines."""

    plan: CanaryPlan
    delta: torch.Tensor
    max_cosines: torch.Tensor | None = None

    def to_payload(self) -> Payload:
        """Pack into a payload (the simulation's ``canaries.bin``, the checkpoint's dp.* keys)."""
        tensors = {"delta": self.delta.to(torch.float64)}
        if self.max_cosines is not None:
            tensors["max_cosines"] = self.max_cosines.to(torch.float64)
        return Payload(
            tensors=tensors,
            config={
                "seed": str(self.plan.seed),
                "seen": self.plan.seen,
                "unseen": self.plan.unseen,
            },
        )

    @classmethod
    def from_payload(cls, payload: Payload) -> CanaryRecord:
        """Inverse of :meth:`to_payload`."""
        cfg = payload.config
        seed, seen, unseen = cfg["seed"], cfg["seen"], cfg["unseen"]
        if not (isinstance(seed, str) and isinstance(seen, int) and isinstance(unseen, int)):
            raise ValueError("malformed canary record")
        return cls(
            CanaryPlan(int(seed), seen, unseen),
            payload.tensors["delta"],
            payload.tensors.get("max_cosines"),
        )

    def final_cosines(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines of (seen, unseen) canaries with the final model delta."""
        cos = CanaryBank(self.plan, int(self.delta.numel())).cosines(self.delta)
        return cos[: self.plan.seen], cos[self.plan.seen :]
