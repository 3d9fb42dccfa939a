"""Server half of ``flexlora``: every layer at the device's rank, exact aggregation."""

from __future__ import annotations

from collections.abc import Sequence

from fedft.core.strategy import ClientInfo
from fedft.strategies.flexlora.config import FlexLoRAConfig
from fedft.strategies.hetero_base.exact import ExactServerBase
from fedft.strategies.hetero_base.layout import Layout


class FlexLoRAServer(ExactServerBase[FlexLoRAConfig]):
    """FlexLoRA (Bai et al., arXiv 2402.11505) as a baseline.

    Each device trains LoRA on every layer at one rank chosen from its resources (here, as in
    ``hetlora``, its measured speed relative to the fastest device); the server sums
    ``w s B A`` exactly and redistributes the truncated SVD at each device's rank.
    """

    def plan(self, clients: Sequence[ClientInfo]) -> dict[str, Layout]:
        """Full depth; the rank follows the device's speed."""
        depth = len(self.layers)
        ranks = self.speed_ranks(clients)
        return {cid: Layout(tuple(self.layers), (r,) * depth) for cid, r in ranks.items()}
