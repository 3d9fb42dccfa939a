"""FlexLoRA baseline: a rank per device by its resources, exact B A aggregation, SVD back."""

from fedft.core.registry import register_strategy
from fedft.strategies.flexlora.client import FlexLoRAClient
from fedft.strategies.flexlora.config import FlexLoRAConfig
from fedft.strategies.flexlora.server import FlexLoRAServer

__all__ = ["FlexLoRAClient", "FlexLoRAConfig", "FlexLoRAServer", "register"]


def register() -> None:
    """Register ``flexlora`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="flexlora",
        config_cls=FlexLoRAConfig,
        server_cls=FlexLoRAServer,
        summary="rank per device, exact sum of s B A, truncated SVD per rank (Bai et al.)",
        client_cls=FlexLoRAClient,
    )
