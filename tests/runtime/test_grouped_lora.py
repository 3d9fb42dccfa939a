"""Grouped LoRA: each row of a packed batch goes through its own client's adapter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedft.core.layout import A_SUFFIX, B_SUFFIX
from fedft.core.trainer import LoraSpec
from fedft.runtime.data import Example
from fedft.runtime.grouped_lora import GroupedLora, ModuleAdapter, Segment
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer

FULL = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))
SHALLOW = LoraSpec(rank=2, alpha=8, target_modules=("q_proj", "v_proj"), layers=(3,))


def _random_adapter(trainer: LocalTrainer, spec: LoraSpec, seed: int) -> dict[str, torch.Tensor]:
    """Put random factors (B too, so the adapter changes the output) into ``spec``'s layout."""
    trainer.use_lora(spec)
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        n: torch.randn(t.shape, generator=gen) * 0.2 for n, t in trainer.lora_state().items()
    }
    trainer.load_lora_state(tensors)
    return tensors


def _leaves(
    trainer: LocalTrainer, tensors: dict[str, torch.Tensor]
) -> tuple[dict[str, ModuleAdapter], list[torch.Tensor]]:
    adapters, leaves = {}, []
    for name, tensor in tensors.items():
        if name.endswith(A_SUFFIX):
            path = name.removesuffix(A_SUFFIX)
            a = tensor.clone().requires_grad_(True)
            b = tensors[path + B_SUFFIX].clone().requires_grad_(True)
            scaling = trainer.model.get_submodule(path).scaling[trainer.active_adapter]
            adapters[path] = ModuleAdapter(a, b, float(scaling))
            leaves += [a, b]
    return adapters, leaves


@pytest.fixture
def trainer(
    tiny_bundle: Callable[[], ModelBundle], chatterbot_examples: list[Example]
) -> LocalTrainer:
    t = LocalTrainer(tiny_bundle(), chatterbot_examples[:8], max_length=32)
    t.add_lora(FULL)
    return t


@pytest.mark.parametrize("second", [FULL, SHALLOW], ids=["same-layout", "other-rank-and-depth"])
def test_packed_forward_equals_each_clients_own_forward_and_gradient(
    trainer: LocalTrainer, second: LoraSpec
) -> None:
    first_tensors = _random_adapter(trainer, FULL, 1)
    second_tensors = _random_adapter(trainer, second, 2)
    ids = torch.randint(3, 200, (4, 12), generator=torch.Generator().manual_seed(0))

    def own(spec: LoraSpec, tensors: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        trainer.use_lora(spec)
        trainer.load_lora_state(tensors)
        return trainer.model(input_ids=rows).logits

    expected = torch.cat([own(FULL, first_tensors, ids[:2]), own(second, second_tensors, ids[2:])])
    trainer.use_lora(FULL)
    adapters1, leaves1 = _leaves(trainer, first_tensors)
    trainer.use_lora(second)
    adapters2, leaves2 = _leaves(trainer, second_tensors)
    with GroupedLora(trainer.model, [adapters1, adapters2]) as grouped:
        grouped.set_segments([Segment(0, 0, 2), Segment(1, 2, 4)])
        packed = trainer.model(input_ids=ids).logits
    torch.testing.assert_close(packed, expected, rtol=1e-5, atol=1e-5)

    # Client 1's loss must reach only client 1's factors, with the gradient it has alone.
    packed[2:].square().mean().backward()
    assert all(leaf.grad is None or not leaf.grad.any() for leaf in leaves1)
    trainer.use_lora(second)
    trainer.load_lora_state(second_tensors)
    trainer.model.zero_grad()
    trainer.model(input_ids=ids[2:]).logits.square().mean().backward()
    live = trainer.adapter_parameters()
    names = [n for n in second_tensors if n.endswith(A_SUFFIX)]
    for name, leaf in zip(names, leaves2[::2], strict=True):
        torch.testing.assert_close(leaf.grad, live[name].grad, rtol=1e-4, atol=1e-6)


def test_hooks_are_removed_and_peft_adapters_come_back(trainer: LocalTrainer) -> None:
    tensors = _random_adapter(trainer, FULL, 3)
    ids = torch.arange(3, 15).reshape(1, -1)
    before = trainer.model(input_ids=ids).logits
    adapters, _ = _leaves(trainer, {n: torch.zeros_like(t) for n, t in tensors.items()})
    with GroupedLora(trainer.model, [adapters]) as grouped:
        grouped.set_segments([Segment(0, 0, 1)])
        inside = trainer.model(input_ids=ids).logits
    after = trainer.model(input_ids=ids).logits
    assert not torch.allclose(inside, before)  # zero factors inside: the base model alone
    torch.testing.assert_close(after, before)


def test_bad_segments_are_refused(trainer: LocalTrainer) -> None:
    grouped = GroupedLora(trainer.model, [{}])
    with pytest.raises(ValueError, match="bad segment"):
        grouped.set_segments([Segment(1, 0, 2)])
    with pytest.raises(ValueError, match="bad segment"):
        grouped.set_segments([Segment(0, 2, 2)])
