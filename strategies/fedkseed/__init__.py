"""FedKSeed: zeroth-order full-parameter tuning whose updates are K seeds' scalar gradients."""

from fedft.core.registry import register_strategy
from fedft.strategies.fedkseed.client import FedKSeedClient
from fedft.strategies.fedkseed.config import FedKSeedConfig
from fedft.strategies.fedkseed.server import FedKSeedServer

__all__ = ["FedKSeedClient", "FedKSeedConfig", "FedKSeedServer", "register"]


def register() -> None:
    """Register ``fedkseed`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="fedkseed",
        config_cls=FedKSeedConfig,
        server_cls=FedKSeedServer,
        summary="zeroth-order full-parameter tuning; one scalar per step goes up (Qin et al.)",
        client_cls=FedKSeedClient,
    )
