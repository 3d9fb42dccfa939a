"""HetLoRA baseline: per-device rank, zero-padding and norm-weighted aggregation.

``hetlora`` is the registered strategy (Cho et al., HetLoRA). It is built on
``fedft.strategies.hetero_base``, the shared, unregistered base of the heterogeneous-LoRA
strategies (``legend`` uses it too); the two names are otherwise unrelated.
"""

from fedft.core.registry import register_strategy
from fedft.strategies.hetlora.client import HetLoRAClient
from fedft.strategies.hetlora.config import HetLoRAConfig
from fedft.strategies.hetlora.server import HetLoRAServer

__all__ = ["HetLoRAClient", "HetLoRAConfig", "HetLoRAServer", "register"]


def register() -> None:
    """Register ``hetlora`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="hetlora",
        config_cls=HetLoRAConfig,
        server_cls=HetLoRAServer,
        client_cls=HetLoRAClient,
    )
