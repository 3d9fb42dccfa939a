"""Server half of ``legend``: per-device depth and rank profile, FlexLoRA's exact aggregation."""

from __future__ import annotations

from collections.abc import Sequence

from fedft.core.strategy import ClientInfo
from fedft.strategies.hetero_base.exact import ExactServerBase
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.legend.config import LegendConfig
from fedft.strategies.legend.planner import CostModel, plan_layouts


class LegendServer(ExactServerBase[LegendConfig]):
    """LEGEND-style: depth and rank profile per device (arXiv 2412.20004).

    The planning (depth = top layers with LoRA, ranks rising to the output, a greedy loop that
    shrinks the predicted straggler) is LEGEND's; the aggregation is FlexLoRA's exact rule
    (arXiv 2402.11505, see :mod:`fedft.strategies.hetero_base.exact`), restricted per module to
    the devices that trained it, since LEGEND's own rule is not public.
    """

    def plan(self, clients: Sequence[ClientInfo]) -> dict[str, Layout]:
        """Greedy depth/rank planning from the devices' profiles (re-run every round)."""
        cfg = self.config
        return plan_layouts(
            self.profiles(clients),
            self.layers,
            CostModel(self.layer_width(), cfg.local_steps),
            min_rank=cfg.min_rank,
            max_rank=cfg.max_rank,
            min_depth=cfg.min_depth,
            balance=cfg.balance,
        )
