"""LEGEND-style heterogeneous LoRA: per-device depth and rank profile, exact aggregation."""

from fedft.core.registry import register_strategy
from fedft.strategies.legend.client import LegendClient
from fedft.strategies.legend.config import LegendConfig
from fedft.strategies.legend.server import LegendServer

__all__ = ["LegendClient", "LegendConfig", "LegendServer", "register"]


def register() -> None:
    """Register ``legend`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="legend",
        config_cls=LegendConfig,
        server_cls=LegendServer,
        client_cls=LegendClient,
    )
