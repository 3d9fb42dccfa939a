"""Shared option groups: every preset's config crosses the wire (no None in a wire config)."""

from __future__ import annotations

from fedft.core.config import parse_overrides
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.strategies import BUILT_IN
from fedft.strategies.fedavg_lora import FedAvgLoRAConfig


def test_unclipped_config_crosses_the_wire() -> None:
    config = FedAvgLoRAConfig(max_grad_norm=None, data_order="persistent")
    back = payload_from_bytes(payload_to_bytes(Payload(config=config.to_dict())))
    assert FedAvgLoRAConfig.from_dict(back.config) == config


def test_every_preset_config_crosses_the_wire() -> None:
    for name in BUILT_IN:  # not whatever third-party plugins are installed
        config_cls = get_strategy(name).config_cls
        for preset in config_cls.presets():
            config = config_cls.from_dict(parse_overrides(config_cls, [f"preset={preset}"]))
            back = payload_from_bytes(payload_to_bytes(Payload(config=config.to_dict())))
            assert config_cls.from_dict(back.config) == config
