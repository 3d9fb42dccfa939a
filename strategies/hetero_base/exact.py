"""FlexLoRA's exact heterogeneous aggregation, shared by ``flexlora`` and ``legend``.

Bai et al., "Federated Fine-tuning of Large Language Models under Heterogeneous Tasks and
Client Resources" (FlexLoRA, arXiv 2402.11505): per module the server forms
``delta W = sum_c w_c s_c B_c A_c`` and gives each device the truncated SVD of it at the
device's own rank. The subclasses differ only in who trains which layers at which rank.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch

from fedft.core.config import option
from fedft.core.layout import layer_of
from fedft.core.payload import MetricValue, Payload
from fedft.strategies.hetero_base.aggregate import ExactAggregator, Factor
from fedft.strategies.hetero_base.config import HeteroLoRAConfig
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.hetero_base.lowrank import DTYPE, LowRank
from fedft.strategies.hetero_base.modules import join_modules
from fedft.strategies.hetero_base.redistribute import client_factors
from fedft.strategies.hetero_base.server_base import HeteroServerBase

_INIT = "init/"
_LEFT = "global_left/"
_RIGHT = "global_right/"


@dataclass(frozen=True)
class ExactConfig(HeteroLoRAConfig):
    """The heterogeneous-LoRA options plus the rank of the exported global adapter."""

    global_rank: int = option(
        64, "rank of the exported/evaluated global adapter (best rank-k of the exact aggregate)"
    )

    def checks(self) -> list[tuple[bool, str]]:
        """The heterogeneous-LoRA checks plus the global rank's."""
        return [
            *super().checks(),
            (self.global_rank >= self.max_rank, "global_rank must be >= max_rank"),
        ]

    def global_adapter_rank(self) -> int:
        """Rank of the global adapter: ``global_rank``."""
        return self.global_rank


E = TypeVar("E", bound=ExactConfig)


class ExactServerBase(HeteroServerBase[E]):
    """Keeps per module the exact weighted mean of ``s B A``, factored at its numerical rank.

    ``delta W = sum_c w_c s_c B_c A_c / sum_c w_c`` over the devices that trained the module
    this round; each device receives the best approximation at its own rank (FlexLoRA).
    Subclasses implement :meth:`plan`.
    """

    def __init__(self, config: E, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.updates: dict[str, LowRank] = {}

    def initialize(self, initial: Payload) -> None:
        """Learn the adapted modules from the initial full-depth adapter; the update starts at 0."""
        if not initial.tensors:
            raise ValueError(f"{type(self).__name__} needs the initial adapter tensors")
        self._learn_modules(initial.tensors)
        self.updates = {m: LowRank.zeros(*shape) for m, shape in self.shapes.items()}

    def _factors_at(
        self, modules: Iterable[str], rank_of: dict[int, int]
    ) -> dict[str, torch.Tensor]:
        out = {}
        for m in modules:
            r = rank_of[layer_of(m)]
            out[m] = client_factors(self.updates[m], r, self.scale(r), self.a_init[m])
        return join_modules(out)

    def client_tensors(self, layout: Layout) -> dict[str, torch.Tensor]:
        """The best rank-r approximation of the global update on each of the layout's layers."""
        ranks = dict(zip(layout.layers, layout.ranks, strict=True))
        return self._factors_at((m for m in self.shapes if layer_of(m) in ranks), ranks)

    def fold(self, updates: Iterable[tuple[dict[str, Factor], float]]) -> dict[str, MetricValue]:
        """Exact owner-weighted mean of ``s B A``; modules nobody trained keep their update."""
        acc = ExactAggregator()
        for factors, weight in updates:
            acc.add(factors, weight)
        fresh = acc.result()
        self.updates.update(fresh)
        ranks = [u.rank for u in self.updates.values()]
        cut = sum(max(0, k - self.config.global_rank) for k in ranks)
        return {
            "modules_updated": len(fresh),
            "max_update_rank": max(ranks, default=0),
            "components_cut_from_global": cut,
        }

    def global_state(self) -> Payload:
        """Full-depth adapter at ``global_rank``: exact while the update's rank fits in it."""
        rank = self.config.global_rank
        return Payload(tensors=self._factors_at(self.shapes, dict.fromkeys(self.layers, rank)))

    def state_dict(self) -> Payload:
        """Initial A per module and the factored global update."""
        tensors = {_INIT + m: a for m, a in self.a_init.items()}
        for m, u in self.updates.items():
            tensors[_LEFT + m] = u.left.clone()
            tensors[_RIGHT + m] = u.right.clone()
        return Payload(tensors=tensors)

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict` (or start from an initial adapter)."""
        if not any(n.startswith(_INIT) for n in state.tensors):
            self.initialize(state)
            return
        a_init = {n.removeprefix(_INIT): a for n, a in state.tensors.items() if n.startswith(_INIT)}
        self._set_modules(a_init, {m: int(state.tensors[_LEFT + m].shape[0]) for m in a_init})
        self.updates = {
            m: LowRank(state.tensors[_LEFT + m].to(DTYPE), state.tensors[_RIGHT + m].to(DTYPE))
            for m in self.shapes
        }
