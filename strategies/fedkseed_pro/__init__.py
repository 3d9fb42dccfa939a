"""FedKSeed-Pro: FedKSeed with seeds sampled by their learned importance."""

from fedft.core.registry import register_strategy
from fedft.strategies.fedkseed_pro.client import FedKSeedProClient
from fedft.strategies.fedkseed_pro.config import FedKSeedProConfig
from fedft.strategies.fedkseed_pro.server import FedKSeedProServer

__all__ = ["FedKSeedProClient", "FedKSeedProConfig", "FedKSeedProServer", "register"]


def register() -> None:
    """Register ``fedkseed_pro`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="fedkseed_pro",
        config_cls=FedKSeedProConfig,
        server_cls=FedKSeedProServer,
        summary="FedKSeed with seeds sampled by their learned importance",
        client_cls=FedKSeedProClient,
    )
