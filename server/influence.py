"""Bounds on one update's influence, checked by the host before any strategy sees the update."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fedft.core.strategy import LinearUpdates, Result, ServerStrategy
from fedft.server.settings import CoordinatorSettings


class InfluenceBounds:
    """The host's checks on top of the strategy's ``check_update``.

    A client's weight is its self-reported ``num_examples``: it may not exceed the server's
    ``max_num_examples`` nor the count its device reported at enrollment or heartbeat (defect
    4). With ``max_update_norm``, a LinearUpdates strategy's update vector must lie within it.
    """

    def __init__(
        self,
        reported: Callable[[str], int],
        settings: CoordinatorSettings,
        strategy: Callable[[], ServerStrategy[Any]],
    ) -> None:
        self.reported = reported  # a client's reported example count (0: none)
        self.settings = settings
        self._strategy = strategy  # read at each call: the DP wrapper may replace the half

    def examples_cap(self, client_id: str) -> int:
        """The most examples ``client_id`` may claim."""
        cap = self.settings.max_num_examples
        reported = self.reported(client_id)
        return min(cap, reported) if reported > 0 else cap

    def check(self, server_round: int, result: Result) -> str | None:
        """Return why ``result`` is refused, or None; the strategy's own check runs last."""
        claimed = result.payload.metrics.get("num_examples")
        if isinstance(claimed, bool) or (claimed is not None and not isinstance(claimed, int)):
            return f"num_examples must be an int, got {claimed!r}"
        if isinstance(claimed, int):
            cap = self.examples_cap(result.client_id)
            if claimed > cap:
                return f"num_examples {claimed} is above this client's cap of {cap}"
        strategy = self._strategy()
        problem = strategy.check_update(server_round, result)
        bound = self.settings.max_update_norm
        if problem is None and bound is not None and isinstance(strategy, LinearUpdates):
            vector = strategy.update_vector(server_round, result)
            if vector is not None:
                norm = float(vector.double().norm())
                if not math.isfinite(norm) or norm > bound:
                    return f"update norm {norm:.4g} is above the bound {bound:g}"
        return problem
