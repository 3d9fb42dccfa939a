"""A LoRA layout read from adapter tensors, written into reply metrics and read back."""

from __future__ import annotations

import pytest
import torch

from fedft.core.layout import adapter_ranks, layer_of, report_layout, reported_layout
from fedft.core.payload import MetricValue


def test_adapter_ranks_take_each_layers_largest_rank_bottom_to_top() -> None:
    tensors = {
        "m.layers.3.q.lora_A.weight": torch.zeros(8, 8),
        "m.layers.1.q.lora_A.weight": torch.zeros(4, 8),
        "m.layers.1.q.lora_B.weight": torch.zeros(8, 4),
        "m.layers.3.v.lora_A.weight": torch.zeros(2, 8),
        "m.lm_head.lora_A.weight": torch.zeros(16, 8),  # outside the blocks: no layer
    }
    assert adapter_ranks(tensors) == [4, 8]
    assert adapter_ranks({}) == []


def test_gpt2_style_block_names_are_layers() -> None:
    # GPT-2 names its blocks transformer.h.N: a host parsing only "layers" saw depth 0.
    tensors = {
        f"base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight": torch.zeros(4, 16)
        for i in range(3)
    }
    assert adapter_ranks(tensors) == [4, 4, 4]
    assert layer_of("base_model.model.transformer.h.3.attn.c_attn") == 3
    with pytest.raises(ValueError, match="layer index"):
        layer_of("base_model.model.lm_head")


def test_layout_round_trips_through_scalar_metrics() -> None:
    metrics: dict[str, MetricValue] = {"train_loss": 1.5}
    report_layout(metrics, [2, 6, 8])
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert reported_layout(metrics) == (3, [2, 6, 8])
    assert reported_layout({"train_loss": 1.0}) == (0, [])
