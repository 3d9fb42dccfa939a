"""The assembly point: streamed quantized loading and the gradient-checkpointing option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedft.kernels.quant_linear import QuantLinear
from fedft.runtime.assembly import ClientRuntime, assemble_client
from fedft.runtime.batching import collate, token_losses
from fedft.runtime.data import Example
from fedft.runtime.spec import RunSpec
from tests.conftest import fedft_cache


def _runtime(cache: Path, **fields: object) -> ClientRuntime:
    spec = RunSpec(strategy="fedavg_lora", model="tiny", device="cpu", max_length=48, **fields)  # type: ignore[arg-type]
    with fedft_cache(cache):
        return assemble_client(spec)


def test_quantized_runs_stream_the_base_in(tiny_cache: Path) -> None:
    runtime = _runtime(tiny_cache, quant="nf4")
    assert runtime.bundle.quant is not None
    assert runtime.memory == runtime.bundle.quant.to_dict()
    assert sum(isinstance(m, QuantLinear) for m in runtime.bundle.model.modules()) == 28


def _grads(
    runtime: ClientRuntime, examples: list[Example]
) -> tuple[float, list[torch.Tensor], int]:
    """Loss and LoRA gradients of one batch in train mode, and decoder-layer forward calls."""
    trainer = runtime.trainer(examples)
    state = trainer.lora_state()
    generator = torch.Generator().manual_seed(3)
    trainer.load_lora_state(
        {k: torch.randn(v.shape, generator=generator) * 0.05 for k, v in state.items()}
    )
    model = trainer.model
    calls = [0]
    # Inside the layer (transformers checkpoints its forward, not its hooks), and a pre-hook:
    # the recomputation stops as soon as the last saved tensor is rebuilt.
    layer = model.get_base_model().model.layers[0].mlp
    handle = layer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    batch = collate(trainer.encoded[:4], runtime.bundle.tokenizer.pad_token_id)
    model.train()
    try:
        total, _ = token_losses(model, batch)
        total.backward()  # type: ignore[no-untyped-call]
    finally:
        handle.remove()
        model.eval()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return float(total), grads, calls[0]


@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_gradient_checkpointing_gives_equal_gradients(
    tiny_cache: Path, chatterbot_examples: list[Example], quant: str
) -> None:
    examples = chatterbot_examples[:8]
    plain_loss, plain, plain_calls = _grads(_runtime(tiny_cache, quant=quant), examples)
    ckpt_loss, ckpt, ckpt_calls = _grads(
        _runtime(tiny_cache, quant=quant, gradient_checkpointing=True), examples
    )
    assert (plain_calls, ckpt_calls) == (1, 2)  # the layer ran again in backward
    assert ckpt_loss == plain_loss
    assert len(plain) == len(ckpt) > 0
    for got, want in zip(ckpt, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
