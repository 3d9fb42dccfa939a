"""Server half of ``hetlora``: zero-pad to the largest rank, norm-weighted mean, truncate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo
from fedft.strategies.hetero_lora.aggregate import Factor, ZeroPadAggregator
from fedft.strategies.hetero_lora.layout import Layout
from fedft.strategies.hetero_lora.modules import join_modules, layer_of
from fedft.strategies.hetero_lora.server_base import HeteroServerBase, speed_rank
from fedft.strategies.hetlora.config import HetLoRAConfig

__all__ = ["HetLoRAServer", "speed_rank"]

_A = "global_a/"
_B = "global_b/"


class HetLoRAServer(HeteroServerBase[HetLoRAConfig]):
    """HetLoRA (Cho et al., EMNLP 2024, arXiv 2401.06432) as a baseline.

    The global adapter is kept at ``max_rank`` with both factors multiplied by ``sqrt(s)`` so
    their product carries PEFT's scale whatever the rank. A device of rank r receives the first
    r rows/columns; updates are zero-padded back and averaged with weights proportional to the
    norm of ``s B A``, per rank row over the devices that own it. No rank self-pruning.
    """

    def __init__(self, config: HetLoRAConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.global_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def initialize(self, initial: Payload) -> None:
        """Start from PEFT's initial A (scaled) and B = 0 at ``max_rank`` on every layer."""
        if not initial.tensors:
            raise ValueError("hetlora needs the initial adapter tensors")
        self._learn_modules(initial.tensors)
        root = self.scale(self.config.max_rank) ** 0.5
        self.global_factors = {
            m: (
                torch.zeros(d_out, self.config.max_rank, dtype=torch.float64),
                root * self.a_init[m].to(torch.float64),
            )
            for m, (d_out, _) in self.shapes.items()
        }

    def plan(self, clients: Sequence[ClientInfo]) -> dict[str, Layout]:
        """Every layer; rank by each device's full-depth step time relative to the fastest."""
        depth = len(self.layers)
        ranks = self.speed_ranks(clients)
        return {cid: Layout(tuple(self.layers), (r,) * depth) for cid, r in ranks.items()}

    def _truncated(
        self, modules: Iterable[str], rank_of: dict[int, int]
    ) -> dict[str, torch.Tensor]:
        out = {}
        for m in modules:
            r = rank_of[layer_of(m)]
            b, a = self.global_factors[m]
            root = self.scale(r) ** 0.5
            out[m] = (b[:, :r] / root, a[:r] / root)
        return join_modules(out)

    def client_tensors(self, layout: Layout) -> dict[str, torch.Tensor]:
        """The first r rank rows/columns of the global adapter, unscaled for rank r."""
        ranks = dict(zip(layout.layers, layout.ranks, strict=True))
        return self._truncated((m for m in self.shapes if layer_of(m) in ranks), ranks)

    def fold(self, updates: Iterable[tuple[dict[str, Factor], float]]) -> dict[str, MetricValue]:
        """Zero-padded, norm-weighted, per-row owner-normalised mean of the scaled factors."""
        acc = ZeroPadAggregator(self.shapes, self.config.max_rank)
        count = 0
        for factors, _ in updates:
            acc.add(factors, ZeroPadAggregator.norm_weight(factors))
            count += 1
        if count:
            self.global_factors = acc.result(self.global_factors)
        return {"modules_updated": len(self.shapes) if count else 0}

    def global_state(self) -> Payload:
        """Every layer at ``max_rank``."""
        return Payload(
            tensors=self._truncated(self.shapes, dict.fromkeys(self.layers, self.config.max_rank))
        )

    def state_dict(self) -> Payload:
        """Initial A and the scaled global factors per module."""
        tensors: dict[str, torch.Tensor] = {}
        for m, (b, a) in self.global_factors.items():
            tensors[_A + m] = a.clone()
            tensors[_B + m] = b.clone()
        for m, a in self.a_init.items():
            tensors["init/" + m] = a
        return Payload(tensors=tensors)

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict` (or start from an initial adapter)."""
        if not any(n.startswith("init/") for n in state.tensors):
            self.initialize(state)
            return
        a_init = {
            n.removeprefix("init/"): t for n, t in state.tensors.items() if n.startswith("init/")
        }
        self._set_modules(a_init, {m: int(state.tensors[_B + m].shape[0]) for m in a_init})
        self.global_factors = {
            m: (state.tensors[_B + m].to(torch.float64), state.tensors[_A + m].to(torch.float64))
            for m in a_init
        }
