"""FedAvg over LoRA adapters (FedIT baseline): example-weighted mean of each adapter tensor."""

from fedft.core import register_strategy
from fedft.strategies.fedavg_lora.client import FedAvgLoRAClient
from fedft.strategies.fedavg_lora.config import FedAvgLoRAConfig
from fedft.strategies.fedavg_lora.server import FedAvgLoRAServer

__all__ = ["FedAvgLoRAClient", "FedAvgLoRAConfig", "FedAvgLoRAServer", "register"]


def register() -> None:
    """Register ``fedavg_lora`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="fedavg_lora",
        config_cls=FedAvgLoRAConfig,
        server_cls=FedAvgLoRAServer,
        client_cls=FedAvgLoRAClient,
    )
