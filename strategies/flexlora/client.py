"""Client half of ``flexlora``: train every layer at the rank the server assigned."""

from __future__ import annotations

from fedft.strategies.hetero_base.client import HeteroLoRAClient


class FlexLoRAClient(HeteroLoRAClient):
    """The shared heterogeneous client; every layer, the device's rank."""
