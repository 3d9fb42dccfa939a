"""--device-mix parsing and the layout read back from a task's adapter."""

from __future__ import annotations

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.simulation.devices import adapter_layout, assign_tiers, parse_device_mix


def test_device_mix_expands_in_order_and_rejects_mistakes() -> None:
    assert parse_device_mix("fast:2,medium:1,slow:0") == ["fast", "fast", "medium"]
    assert parse_device_mix("") == []
    assert parse_device_mix("slow") == ["slow"]
    for bad, message in (
        ("turbo:1", "unknown tier"),
        ("fast:x", "TIER:COUNT"),
        ("fast:-1", "negative"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_device_mix(bad)
    assert assign_tiers("slow:1,fast:1", ["b", "a"]) == {"a": "slow", "b": "fast"}
    with pytest.raises(UsageError, match="describes 1 devices"):
        assign_tiers("fast:1", ["a", "b"])


def test_adapter_layout_from_tensors_or_config() -> None:
    tensors = {
        "m.layers.1.q.lora_A.weight": torch.zeros(4, 8),
        "m.layers.1.q.lora_B.weight": torch.zeros(8, 4),
        "m.layers.3.q.lora_A.weight": torch.zeros(8, 8),
        "m.layers.3.v.lora_A.weight": torch.zeros(2, 8),
    }
    assert adapter_layout(tensors, {}) == (2, [4, 8])
    assert adapter_layout(tensors, {"lora_ranks": [2, 6]}) == (2, [2, 6])
    assert adapter_layout({}, {}) == (0, [])
