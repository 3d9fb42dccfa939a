"""Server half of ``hetlora``: zero-pad to the largest rank, norm-weighted mean, truncate."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from fedft.core.layout import layer_of
from fedft.core.payload import ConfigValue, MetricValue, Payload
from fedft.core.strategy import ClientInfo, Result
from fedft.strategies.hetero_base.aggregate import Factor, ZeroPadAggregator
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.hetero_base.modules import join_modules, split_modules
from fedft.strategies.hetero_base.server_base import HeteroServerBase, speed_rank
from fedft.strategies.hetlora.config import HetLoRAConfig

__all__ = ["HetLoRAServer", "speed_rank"]

_A = "global_a/"
_B = "global_b/"


class HetLoRAServer(HeteroServerBase[HetLoRAConfig]):
    """HetLoRA (Cho et al., EMNLP 2024, arXiv 2401.06432) as a baseline.

    The global adapter is kept at ``max_rank`` with both factors multiplied by ``sqrt(s)`` so
    their product carries PEFT's scale whatever the rank. A device of rank r receives the first
    r rows/columns; updates are zero-padded back and averaged with weights proportional to the
    norm of ``s B A``, per rank row over the devices that own it. Rank self-pruning
    (``prune_gamma``) caps a device's rank once its tail components shrink in local training;
    HetLoRA's tail-norm regulariser on the local loss is not applied.
    """

    def __init__(self, config: HetLoRAConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.global_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rank_caps: dict[str, int] = {}  # self-pruned ranks, by client id

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
        ranks = {cid: min(r, self.rank_caps.get(cid, r)) for cid, r in ranks.items()}
        return {cid: Layout(tuple(self.layers), (r,) * depth) for cid, r in ranks.items()}

    def _tail_norm(self, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], r: int) -> float:
        """Sum over modules of |B[:, tail]| |A[tail]| for the last ceil(gamma r) components."""
        tail = max(1, math.ceil(self.config.prune_gamma * r))
        return sum(
            float(b[:, r - tail : r].norm()) * float(a[r - tail : r].norm())
            for b, a in factors.values()
        )

    def observe_update(self, result: Result, factors: Mapping[str, Factor]) -> None:
        """Self-pruning: cap the device's rank when its tail components shrank this round."""
        gamma = self.config.prune_gamma
        if gamma <= 0 or not factors:
            return
        r = int(next(iter(factors.values()))[1].shape[0])
        if r <= self.config.min_rank:
            return
        sent = split_modules(self._truncated(factors, dict.fromkeys(self.layers, r)))
        after = {m: (b, a) for m, (b, a, _) in factors.items()}
        if self._tail_norm(after, r) < self._tail_norm(sent, r):
            self.rank_caps[result.client_id] = max(
                self.config.min_rank, math.floor((1 - gamma) * r)
            )

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
        ids = sorted(self.rank_caps)
        config: dict[str, ConfigValue] = {
            "pruned_ids": ids,
            "pruned_ranks": [self.rank_caps[i] for i in ids],
        }
        return Payload(tensors=tensors, config=config)

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
        ids, ranks = state.config.get("pruned_ids", []), state.config.get("pruned_ranks", [])
        if isinstance(ids, list) and isinstance(ranks, list):
            self.rank_caps = {
                str(i): int(r) for i, r in zip(ids, ranks, strict=True) if isinstance(r, int)
            }
