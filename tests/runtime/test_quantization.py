"""Quantized base + LoRA: memory saved, LoRA gradients, training, adapters that load unquantized."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.core.trainer import LoraSpec
from fedft.kernels.quant import dequantize
from fedft.kernels.quant_linear import QuantLinear
from fedft.runtime.batching import collate, encode
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.quantization import model_bytes, quantize_bundle
from fedft.runtime.trainer import LocalTrainer

SPEC = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj"))
MAX_LENGTH = 48


@pytest.fixture
def examples(chatterbot_examples: list[Example]) -> list[Example]:
    return chatterbot_examples[::41][:32]


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_quantize_bundle_replaces_linears_and_saves_memory(
    tiny_bundle: Callable[[], ModelBundle], scheme: str
) -> None:
    bundle = tiny_bundle()
    linears = sum(isinstance(m, torch.nn.Linear) for m in bundle.model.modules())
    summary = quantize_bundle(bundle, scheme)
    quantized = [m for m in bundle.model.modules() if isinstance(m, QuantLinear)]
    assert summary.layers == len(quantized) == linears - 1  # all but lm_head
    assert isinstance(bundle.model.get_submodule("lm_head"), torch.nn.Linear)
    assert summary.bytes_after == model_bytes(bundle.model) < summary.bytes_before
    assert bundle.quant is summary
    assert summary.to_dict()["saved_fraction"] > 0


def test_quantize_none_and_bad_scheme(tiny_bundle: Callable[[], ModelBundle]) -> None:
    bundle = tiny_bundle()
    summary = quantize_bundle(bundle, "none")
    assert summary.bytes_after == summary.bytes_before
    assert bundle.quant is None
    with pytest.raises(UsageError, match="--quant"):
        quantize_bundle(bundle, "fp4")


def _dequantized_twin(bundle: ModelBundle, fresh: ModelBundle) -> ModelBundle:
    """Give ``fresh`` (unquantized) exactly the weights the quantized model computes with."""
    for name, module in bundle.model.named_modules():
        if isinstance(module, QuantLinear):
            target = fresh.model.get_submodule(name)
            with torch.no_grad():
                target.weight.copy_(dequantize(module.quantized))
    return fresh


def test_lora_gradients_on_nf4_equal_those_on_the_dequantized_model(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    quantized = tiny_bundle()
    quantize_bundle(quantized, "nf4")
    twin = _dequantized_twin(quantized, tiny_bundle())
    grads = []
    for bundle in (quantized, twin):
        trainer = LocalTrainer(bundle, examples, max_length=MAX_LENGTH)
        trainer.add_lora(SPEC)
        # Non-zero B, so the gradient of A depends on the base layers' input gradients too.
        state = {
            k: torch.full_like(v, 0.01) if "lora_B" in k else v
            for k, v in trainer.lora_state().items()
        }
        trainer.load_lora_state(state)
        items = [encode(bundle.tokenizer, ex, MAX_LENGTH) for ex in examples[:4]]
        batch = collate(items, bundle.tokenizer.pad_token_id)
        bundle.model.train()
        out = bundle.model(**batch)
        out.loss.backward()
        grads.append(
            {n: p.grad.clone() for n, p in bundle.model.named_parameters() if p.grad is not None}
        )
    assert set(grads[0]) == set(grads[1])
    assert len(grads[0]) == 2 * 3 * 4  # A and B of three modules in four layers
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-6)
        assert grad.abs().sum() > 0


def test_nf4_lora_trains_and_exports_an_adapter_for_the_unquantized_base(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example], tmp_path: Path
) -> None:
    from peft import PeftModel

    bundle = tiny_bundle()
    quantize_bundle(bundle, "nf4")
    trainer = LocalTrainer(bundle, examples, max_length=MAX_LENGTH)
    trainer.add_lora(SPEC)
    batch = next(trainer.batches(batch_size=8, seed=0))
    before = trainer.loss(batch)
    trainer.train(steps=15, batch_size=8, lr=5e-3, seed=0)
    assert trainer.loss(batch) < before
    trainer.save_adapter(tmp_path / "adapter")
    plain = tiny_bundle().model
    loaded = PeftModel.from_pretrained(plain, str(tmp_path / "adapter"))
    assert not any(isinstance(m, QuantLinear) for m in loaded.modules())
    from peft import get_peft_model_state_dict

    exported = get_peft_model_state_dict(loaded)
    trained = trainer.lora_state()
    assert set(exported) == set(trained)
    for name, tensor in trained.items():
        assert torch.equal(exported[name].float(), tensor)


def test_quantizing_after_lora_is_refused(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    bundle = tiny_bundle()
    LocalTrainer(bundle, examples).add_lora(SPEC)
    with pytest.raises(ValueError, match="before adding LoRA"):
        quantize_bundle(bundle, "nf4")
