"""An exported adapter cut to its live ranks computes exactly what the padded one did."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from fedft.runtime.adapter_trim import live_rank, trim_adapter
from fedft.runtime.models import ModelBundle


def test_live_rank_is_one_past_the_last_live_component() -> None:
    a, b = torch.randn(6, 5), torch.randn(7, 6)
    assert live_rank(a, b) == 6
    b[:, 3:] = 0
    assert live_rank(a, b) == 3
    a[1] = 0  # a dead component inside stays: only the tail is cut
    assert live_rank(a, b) == 3
    assert live_rank(a, torch.zeros(7, 6)) == 0


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("pattern", [{}, {r"layers\.1\..*": 4}], ids=["plain", "with-pattern"])
def test_trimmed_adapter_loads_with_peft_and_gives_the_same_logits(
    tiny_bundle: Callable[[], ModelBundle], tmp_path: Path, pattern: dict[str, int]
) -> None:
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj"],
        rank_pattern=pattern,
        alpha_pattern=dict.fromkeys(pattern, 12),
    )
    model = get_peft_model(tiny_bundle().model, config)
    generator = torch.Generator().manual_seed(0)
    for name, module in model.named_modules():
        if not hasattr(module, "lora_B"):
            continue
        b = module.lora_B["default"].weight
        b.data = torch.randn(b.shape, generator=generator) * 0.1
        if ".layers.0." in name:
            b.data[:, 3:] = 0  # trained at rank 3 only
        if ".layers.2." in name and name.endswith("v_proj"):
            b.data.zero_()  # never trained
    ids = torch.randint(0, 100, (2, 12), generator=generator)
    expected = _logits(model, ids)
    model.save_pretrained(str(tmp_path))

    changed = trim_adapter(tmp_path)
    assert changed["model.layers.0.self_attn.q_proj"] == 3
    assert changed["model.layers.2.self_attn.v_proj"] == 0
    assert "model.layers.3.self_attn.q_proj" not in changed  # full rank: untouched
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    a0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert tensors[a0].shape[0] == 3
    assert not any("layers.2.self_attn.v_proj" in k for k in tensors)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert "model.layers.2.self_attn.v_proj" not in saved["target_modules"]

    loaded = PeftModel.from_pretrained(tiny_bundle().model, str(tmp_path))
    torch.testing.assert_close(_logits(loaded, ids), expected, rtol=1e-5, atol=1e-6)
    assert trim_adapter(tmp_path) == {}  # already at its live ranks


def test_an_untrained_adapter_is_left_as_it_is(
    tiny_bundle: Callable[[], ModelBundle], tmp_path: Path
) -> None:
    model = get_peft_model(tiny_bundle().model, LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(str(tmp_path))  # B = 0 everywhere: nothing is live
    before = (tmp_path / "adapter_model.safetensors").read_bytes()
    assert trim_adapter(tmp_path) == {}
    assert (tmp_path / "adapter_model.safetensors").read_bytes() == before
