"""Streamed quantized loading equals load-then-quantize bit for bit, and falls back when it must."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedft.kernels.quant_linear import QuantLinear
from fedft.runtime.data import Example
from fedft.runtime.evaluation import held_out_loss
from fedft.runtime.models import ModelBundle, load_model
from fedft.runtime.quantization import quantize_bundle
from fedft.runtime.streaming import checkpoint_files, stream_tensors, tensor_names
from tests.conftest import fedft_cache


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict())


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_streamed_model_equals_load_then_quantize(
    tiny_cache: Path,
    tiny_bundle: Callable[[], ModelBundle],
    chatterbot_examples: list[Example],
    scheme: str,
) -> None:
    reference = tiny_bundle()
    expected_summary = quantize_bundle(reference, scheme)
    with fedft_cache(tiny_cache):
        streamed = load_model("tiny", quant=scheme)
    assert streamed.quant == expected_summary
    layers = [n for n, m in streamed.model.named_modules() if isinstance(m, QuantLinear)]
    assert len(layers) == expected_summary.layers > 0
    ref_state, got_state = _state(reference.model), _state(streamed.model)
    assert ref_state.keys() == got_state.keys()
    for name, tensor in ref_state.items():
        assert got_state[name].dtype == tensor.dtype, name
        assert torch.equal(got_state[name], tensor), name
    assert not streamed.model.training
    examples = chatterbot_examples[:16]
    want = held_out_loss(reference, examples, max_length=48).loss
    assert held_out_loss(streamed, examples, max_length=48).loss == want


def test_reader_yields_every_stored_tensor_as_saved(tiny_cache: Path) -> None:
    from safetensors.torch import load_file

    with fedft_cache(tiny_cache):
        path = load_model("tiny").path
    files = checkpoint_files(path)
    saved = load_file(files[0])
    streamed = dict(stream_tensors(files))
    assert tensor_names(files) == saved.keys() == streamed.keys()
    for name, tensor in saved.items():
        assert torch.equal(streamed[name], tensor), name


def test_a_checkpoint_that_cannot_stream_is_quantized_after_loading(
    tiny_cache: Path, tmp_path: Path
) -> None:
    with fedft_cache(tiny_cache):
        source = load_model("tiny").path
    folder = tmp_path / "pt-checkpoint"
    shutil.copytree(source, folder)
    (folder / "model.safetensors").unlink()
    model = load_model(str(source)).model
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    bundle = load_model(str(folder), quant="nf4")
    assert bundle.quant is not None
    assert bundle.quant.layers > 0
    assert any(isinstance(m, QuantLinear) for m in bundle.model.modules())


def test_tied_lm_head_stays_tied_and_equal(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from fedft.runtime.models import byte_tokenizer

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reference = load_model(str(tmp_path))
    quantize_bundle(reference, "nf4")
    streamed = load_model(str(tmp_path), quant="nf4")
    model: torch.nn.Module = streamed.model
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.dtype == torch.float32
    ref_state, got_state = _state(reference.model), _state(model)
    assert ref_state.keys() == got_state.keys()
    for name, tensor in ref_state.items():
        assert torch.equal(got_state[name], tensor), name
