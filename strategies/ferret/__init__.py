"""Ferret: first-order local training, shared as projections onto K seeded random bases."""

from fedft.core.registry import register_strategy
from fedft.strategies.ferret.client import FerretClient
from fedft.strategies.ferret.config import FerretConfig
from fedft.strategies.ferret.server import FerretServer

__all__ = ["FerretClient", "FerretConfig", "FerretServer", "register"]


def register() -> None:
    """Register ``ferret`` (the ``fedft.strategies`` entry point)."""
    register_strategy(
        name="ferret",
        config_cls=FerretConfig,
        server_cls=FerretServer,
        summary="first-order local steps, sent as projections onto seeded bases (Shu et al.)",
        client_cls=FerretClient,
    )
