"""Several LoRA layouts on one model: switching keeps each adapter, only the active one trains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedft.core.trainer import LoraSpec
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer

FULL = LoraSpec(rank=8, alpha=16, target_modules=("q_proj", "v_proj"))
TOP2 = LoraSpec(
    rank=4,
    alpha=16,
    target_modules=("q_proj", "v_proj"),
    layers=(2, 3),
    rank_pattern={r"layers\.2\..*": 2},
)


@pytest.fixture
def trainer(
    tiny_bundle: Callable[[], ModelBundle], chatterbot_examples: list[Example]
) -> LocalTrainer:
    t = LocalTrainer(tiny_bundle(), chatterbot_examples[::50][:16], max_length=48)
    t.add_lora(FULL)
    return t


def test_use_lora_adds_a_second_layout_and_switches_back(trainer: LocalTrainer) -> None:
    full = trainer.lora_state()
    trainer.use_lora(TOP2)
    top = trainer.lora_state()
    assert {n.split(".layers.")[1].split(".")[0] for n in top} == {"2", "3"}
    shapes = {n: tuple(t.shape) for n, t in top.items() if "lora_A" in n}
    assert shapes["base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight"] == (2, 64)
    assert shapes["base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"] == (4, 64)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable
    assert all("layout1" in n for n in trainable)
    assert len(trainable) == len(top)

    trainer.train(steps=2, batch_size=4, lr=1e-2, seed=0)
    trained = trainer.lora_state()
    assert any(not torch.equal(trained[n], top[n]) for n in top)
    trainer.use_lora(FULL)  # back to the first adapter: untouched by the other's training
    assert all(torch.equal(trainer.lora_state()[n], full[n]) for n in full)
    trainer.add_lora(FULL)  # add_lora of a known layout stays idempotent
    trainer.use_lora(TOP2)
    assert all(torch.equal(trainer.lora_state()[n], trained[n]) for n in trained)


def test_only_the_active_layout_changes_the_output(trainer: LocalTrainer) -> None:
    ids = torch.arange(3, 19).reshape(1, -1)
    base = trainer.model(input_ids=ids).logits
    trainer.use_lora(TOP2)
    state = trainer.lora_state()
    trainer.load_lora_state({n: torch.full_like(t, 0.05) for n, t in state.items()})
    moved = trainer.model(input_ids=ids).logits
    trainer.use_lora(FULL)
    again = trainer.model(input_ids=ids).logits
    assert not torch.allclose(moved, base)
    assert torch.allclose(again, base)


def test_a_non_default_layout_saves_as_a_loadable_peft_folder(
    trainer: LocalTrainer, tiny_bundle: Callable[[], ModelBundle], tmp_path: Path
) -> None:
    from peft import PeftModel

    trainer.use_lora(TOP2)
    state = trainer.lora_state()
    trainer.load_lora_state({n: torch.randn(t.shape) * 0.1 for n, t in state.items()})
    ids = torch.arange(3, 19).reshape(1, -1)
    expected = trainer.model(input_ids=ids).logits
    trainer.save_adapter(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(tiny_bundle().model, str(tmp_path / "adapter"))
    assert torch.allclose(loaded(input_ids=ids).logits, expected, atol=1e-5)


def test_stale_layouts_are_dropped_beyond_the_cap(trainer: LocalTrainer) -> None:
    from fedft.runtime.trainer import MAX_LAYOUTS

    specs = [
        LoraSpec(
            rank=2,
            alpha=r,
            target_modules=("q_proj", "v_proj"),
            layers=(3,),
        )
        for r in range(1, MAX_LAYOUTS + 4)
    ]
    for spec in specs:
        trainer.use_lora(spec)
    names = set(trainer.bundle.lora_adapters.values())
    assert "default" in names
    assert len(names) == MAX_LAYOUTS + 1
    assert repr(specs[-1]) in trainer.bundle.lora_adapters  # the active one is kept
    assert repr(specs[0]) not in trainer.bundle.lora_adapters  # the oldest went
    peft_config = trainer.model.peft_config  # type: ignore[union-attr]
    assert set(peft_config) == names
    trainer.use_lora(specs[0])  # a dropped layout comes back fresh
    assert trainer.lora_state()


def _peft_view(trainer: LocalTrainer) -> dict[str, torch.Tensor]:
    """The active adapter as PEFT's own (uncached) state-dict walk sees it."""
    from peft import get_peft_model_state_dict

    adapter = trainer.bundle.lora_adapters[repr(trainer.bundle.lora_spec)]
    state = get_peft_model_state_dict(trainer.model, adapter_name=adapter)
    return {n: t.detach().float().clone() for n, t in state.items()}


def test_loads_reach_the_live_adapter_through_layout_churn(trainer: LocalTrainer) -> None:
    """The cached adapter tensors follow adapters PEFT re-creates under a reused name."""
    from fedft.runtime.trainer import MAX_LAYOUTS

    specs = [
        LoraSpec(rank=1 + r % 3, alpha=r, target_modules=("q_proj",), layers=(r % 4,))
        for r in range(1, 2 * MAX_LAYOUTS + 2)
    ]
    gen = torch.Generator().manual_seed(3)
    for spec in [*specs, FULL, specs[0], TOP2]:
        trainer.use_lora(spec)
        shapes = {n: t.shape for n, t in _peft_view(trainer).items()}
        new = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
        trainer.load_lora_state(new)
        live = _peft_view(trainer)
        assert live.keys() == new.keys()
        assert all(torch.equal(live[n], new[n]) for n in new)
        assert all(torch.equal(t, live[n]) for n, t in trainer.lora_state().items())
