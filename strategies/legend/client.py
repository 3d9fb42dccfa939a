"""Client half of ``legend``: train the depth and ranks the server planned for this device."""

from __future__ import annotations

from fedft.strategies.hetero_base.client import HeteroLoRAClient


class LegendClient(HeteroLoRAClient):
    """The shared heterogeneous client; the layout arrives with every task."""
