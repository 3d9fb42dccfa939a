"""--device-mix parsing."""

from __future__ import annotations

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.devices import assign_tiers, parse_device_mix


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
