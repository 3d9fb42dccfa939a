"""Client half of ``hetlora``: train at the rank the server assigned to this device."""

from __future__ import annotations

from fedft.strategies.hetero_base.client import HeteroLoRAClient


class HetLoRAClient(HeteroLoRAClient):
    """The shared heterogeneous client; every layer, the device's rank."""
