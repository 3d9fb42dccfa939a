"""Tests for fedft.runtime.models: the cached tiny preset, the byte tokenizer, SmolLM2 offline."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.runtime.evaluation import generate_answers
from fedft.runtime.models import (
    TINY_VERSION,
    ModelBundle,
    byte_tokenizer,
    load_model,
    resolve_model,
)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_tiny_preset_is_cached_and_reloads_identically(
    tiny_cache: Path, tiny_bundle: Callable[[], ModelBundle]
) -> None:
    first = tiny_bundle()
    folder = tiny_cache / "models" / TINY_VERSION
    assert first.path == folder
    assert first.source == "tiny"
    assert first.lora_spec is None
    assert (folder / "config.json").is_file()
    assert (folder / "model.safetensors").is_file()
    assert type(first.model).__name__ == "LlamaForCausalLM"
    assert not first.model.training
    config: Any = first.model.config
    assert config.vocab_size == len(first.tokenizer) == 259
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    second = tiny_bundle()
    assert second.model is not first.model
    assert_same_weights(first.model, second.model)
    # The second load reused the cache instead of rebuilding it.
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    # No half-built temp folders or anything else besides the entry and its lock.
    leftovers = sorted(p.name for p in (tiny_cache / "models").iterdir())
    assert leftovers == [f".{TINY_VERSION}.lock", TINY_VERSION]


def test_tiny_preset_is_the_same_on_every_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_bundle: Callable[[], ModelBundle]
) -> None:
    """A separate cache (another machine) builds bit-identical weights; no global RNG effect."""
    reference = tiny_bundle()
    monkeypatch.setenv("FEDFT_CACHE", str(tmp_path))
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    other = load_model("tiny")
    assert torch.equal(torch.get_rng_state(), before)
    assert other.path == tmp_path / "models" / TINY_VERSION
    assert_same_weights(reference.model, other.model)
    # Loading by path gives the same model too.
    by_path = load_model(str(other.path))
    assert by_path.source == str(other.path)
    assert_same_weights(reference.model, by_path.model)


def test_byte_tokenizer_round_trips_unicode() -> None:
    tok = byte_tokenizer()
    assert len(tok) == 259
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    texts = ["plain ascii", "héllo wörld", "日本語のテキスト", "emoji 🎉🚀", "tab\tnew\nline", ""]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text.encode("utf-8"))  # one token per byte, no merges
        assert all(3 <= i < 259 for i in ids)
        assert tok.decode(ids) == text
    # Special tokens decode away when asked.
    ids = [tok.bos_token_id, *tok("ok", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "ok"


def test_byte_tokenizer_saved_with_the_model_matches(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    loaded = tiny_bundle().tokenizer
    fresh = byte_tokenizer()
    text = "Grüße, 世界! 123"
    assert loaded(text)["input_ids"] == fresh(text)["input_ids"]
    assert loaded.pad_token_id == fresh.pad_token_id


def test_missing_model_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist") as info:
        load_model(str(tmp_path / "no-such-model"))
    assert "tiny" in str(info.value)
    assert "smollm2" in str(info.value)


def test_folder_without_config_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(UsageError, match=r"no config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(UsageError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_folder_with_a_broken_checkpoint_is_a_usage_error(tmp_path: Path, tiny_cache: Path) -> None:
    (tmp_path / "config.json").write_text(
        (tiny_cache / "models" / TINY_VERSION / "config.json").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    with pytest.raises(UsageError, match="cannot load model"):
        load_model(str(tmp_path))


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers() -> None:
    """The embedded default model, converted once into the default cache (~25 s the first time)."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    bundle = load_model("smollm2")
    model = bundle.model
    assert type(model).__name__ == "LlamaForCausalLM"
    n_params = sum(p.numel() for p in model.parameters())
    assert 134_000_000 < n_params < 135_000_000
    assert bundle.tokenizer.chat_template
    [answer] = generate_answers(bundle, ["What is the capital of France?"], max_new_tokens=24)
    assert answer.strip()
    assert "Paris" in answer  # the dequantized weights still know this
