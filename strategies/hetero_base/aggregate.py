"""Aggregators of LoRA updates whose ranks and depths differ: exact (FlexLoRA) and zero-padded."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedft.strategies.hetero_base.lowrank import DTYPE, LowRank, compact, stack

# (B, A, scale) of one module of one client: its update to W is scale * B @ A.
Factor = tuple[torch.Tensor, torch.Tensor, float]


class ExactAggregator:
    """Per module, the owner-weighted mean ``sum_c w_c s_c B_c A_c / sum_c w_c``, exactly.

    Only the clients that trained a module (its owners) weigh in its mean: a device whose LoRA
    stops below a layer takes no weight from that layer. Factors are stacked along the rank
    dimension and compacted (an exact re-factoring, no truncation) whenever the stack grows past
    ``min(d_out, d_in)``, so memory stays bounded by a dense matrix per module however many
    clients stream in.
    """

    def __init__(self) -> None:
        self._stacks: dict[str, LowRank] = {}
        self._weights: dict[str, float] = {}

    def add(self, factors: Mapping[str, Factor], weight: float) -> None:
        """Add one client's modules with aggregation weight ``weight`` (e.g. its examples)."""
        if weight <= 0:
            raise ValueError(f"aggregation weight must be > 0, got {weight}")
        for module, (b, a, scale) in factors.items():
            term = stack([(b, a, weight * scale)])
            held = self._stacks.get(module)
            if held is not None:
                if held.shape != term.shape:
                    raise ValueError(f"{module}: shape {term.shape} differs from {held.shape}")
                term = LowRank(
                    torch.cat([held.left, term.left], dim=1),
                    torch.cat([held.right, term.right], dim=0),
                )
                if term.rank > min(term.shape):
                    term = compact(term)
            self._stacks[module] = term
            self._weights[module] = self._weights.get(module, 0.0) + weight

    def owners_weight(self, module: str) -> float:
        """Total weight of the clients that trained ``module`` (0 if none did)."""
        return self._weights.get(module, 0.0)

    def result(self) -> dict[str, LowRank]:
        """The mean update of every module someone trained, compacted to its numerical rank."""
        return {
            module: compact(LowRank(held.left / self._weights[module], held.right))
            for module, held in self._stacks.items()
        }


class ZeroPadAggregator:
    """HetLoRA's aggregation: zero-pad A and B to the largest rank, weight by update norm.

    Factors arrive pre-scaled by ``sqrt(s)`` each, so the product carries the LoRA scale. Each
    rank row (a row of A, the matching column of B) is divided by the total weight of the
    clients that own that row, so padded zeros do not dilute the rows only larger clients have.
    Averaging A and B separately is not averaging B A; this is the inexact baseline.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, int]], max_rank: int) -> None:
        self.max_rank = max_rank
        self._a = {m: torch.zeros(max_rank, d_in, dtype=DTYPE) for m, (_, d_in) in shapes.items()}
        self._b = {m: torch.zeros(d_out, max_rank, dtype=DTYPE) for m, (d_out, _) in shapes.items()}
        self._row_weight = {m: torch.zeros(max_rank, dtype=DTYPE) for m in shapes}

    @staticmethod
    def norm_weight(factors: Mapping[str, Factor]) -> float:
        """HetLoRA's client weight: the Frobenius norm of its whole update ``s B A``."""
        total = 0.0
        for b, a, scale in factors.values():
            total += float((scale * (b.to(DTYPE) @ a.to(DTYPE))).square().sum())
        return float(total**0.5)

    def add(self, factors: Mapping[str, Factor], weight: float) -> None:
        """Add one client's modules, zero-padded to ``max_rank``, with weight ``weight``."""
        if weight <= 0:
            return
        for module, (b, a, scale) in factors.items():
            r = a.shape[0]
            if r > self.max_rank:
                raise ValueError(f"{module}: rank {r} exceeds max_rank {self.max_rank}")
            root = scale**0.5
            self._a[module][:r] += weight * root * a.to(DTYPE)
            self._b[module][:, :r] += weight * root * b.to(DTYPE)
            self._row_weight[module][:r] += weight

    def result(
        self, previous: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Mean ``(sqrt(s) B, sqrt(s) A)`` per module; rows nobody owned keep ``previous``."""
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for module, weight in self._row_weight.items():
            old_b, old_a = previous[module]
            owned = weight > 0
            safe = torch.where(owned, weight, torch.ones_like(weight))
            a = torch.where(owned[:, None], self._a[module] / safe[:, None], old_a.to(DTYPE))
            b = torch.where(owned[None, :], self._b[module] / safe[None, :], old_b.to(DTYPE))
            out[module] = (b, a)
        return out
