"""Tests for fedft.runtime.trainer: LoRA injection, adapter state, deterministic local training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedft.core.trainer import LoraSpec, Trainer
from fedft.runtime.batching import collate, encode
from fedft.runtime.data import Example
from fedft.runtime.evaluation import held_out_loss
from fedft.runtime.models import ModelBundle, load_model
from fedft.runtime.trainer import LocalTrainer

SPEC = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))
MAX_LENGTH = 64


@pytest.fixture
def examples(chatterbot_examples: list[Example]) -> list[Example]:
    """64 examples spread over the whole corpus (and so over many categories)."""
    return chatterbot_examples[::37][:64]


@pytest.fixture
def make_trainer(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> Callable[[], LocalTrainer]:
    """Build a trainer with LoRA on a fresh tiny model."""

    def make() -> LocalTrainer:
        trainer = LocalTrainer(tiny_bundle(), examples, max_length=MAX_LENGTH)
        trainer.add_lora(SPEC)
        return trainer

    return make


def adapters_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


def test_is_a_trainer(tiny_bundle: Callable[[], ModelBundle], examples: list[Example]) -> None:
    trainer = LocalTrainer(tiny_bundle(), examples)
    assert isinstance(trainer, Trainer)
    assert trainer.num_examples == 64
    assert len(trainer.encoded) == 64
    assert trainer.encoded is trainer.encoded  # tokenized once
    assert trainer.encoded[3] is trainer.encoded[3]
    assert [e.input_ids for e in trainer.encoded[-2:]] == [
        trainer.encoded[62].input_ids,
        trainer.encoded[63].input_ids,
    ]
    with pytest.raises(IndexError):
        trainer.encoded[64]


def test_only_the_examples_trained_on_are_tokenized(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    trainer = LocalTrainer(tiny_bundle(), examples)
    trainer.add_lora(LoraSpec(rank=2, target_modules=("q_proj",)))
    trainer.train(steps=2, batch_size=3, lr=1e-3, seed=0)
    assert len(trainer.encoded._cache) == 6  # two batches of three, not all 64


def test_constructor_and_train_argument_checks(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    bundle = tiny_bundle()
    with pytest.raises(ValueError, match="max_length must be >= 8"):
        LocalTrainer(bundle, examples, max_length=7)
    plain = LocalTrainer(bundle, examples)
    # A loaded base model is trainable in PyTorch, so freeze it first: without adapters
    # nothing is trainable and train() must say so.
    for p in bundle.model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        plain.train(steps=1, batch_size=2, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match="no LoRA adapters to save"):
        plain.save_adapter(Path("unused"))
    empty = LocalTrainer(bundle, [])
    empty.add_lora(SPEC)
    with pytest.raises(ValueError, match="no training examples"):
        empty.train(steps=1, batch_size=2, lr=1e-3, seed=0)
    for seed in (-1, 2**63):
        with pytest.raises(ValueError, match="seed must be in"):
            LocalTrainer(bundle, examples).train(steps=1, batch_size=2, lr=1e-3, seed=seed)


def test_add_lora_freezes_all_but_the_adapters(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    bundle = tiny_bundle()
    base_params = sum(p.numel() for p in bundle.model.parameters())
    trainer = LocalTrainer(bundle, examples)
    trainer.add_lora(SPEC)
    assert bundle.lora_spec == SPEC
    assert trainer.model is bundle.model
    named = dict(trainer.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    lora = {n for n in named if "lora_" in n}
    assert trainable == lora
    # 4 layers x (q, v) x (A, B)
    assert len(lora) == 16
    hidden = 64
    assert sum(named[n].numel() for n in lora) == 4 * 2 * (hidden * 4 + 4 * hidden)
    assert sum(p.numel() for p in named.values()) == base_params + sum(
        named[n].numel() for n in lora
    )


def test_add_lora_is_idempotent_for_the_same_spec(
    make_trainer: Callable[[], LocalTrainer],
) -> None:
    trainer = make_trainer()
    model = trainer.model
    before = trainer.lora_state()
    trainer.add_lora(LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj")))
    assert trainer.model is model
    assert adapters_equal(trainer.lora_state(), before)
    with pytest.raises(ValueError, match="already carries LoRA"):
        trainer.add_lora(LoraSpec(rank=8, alpha=8, target_modules=("q_proj", "v_proj")))
    with pytest.raises(ValueError, match="already carries LoRA"):
        trainer.add_lora(LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "k_proj")))
    assert trainer.model is model


def test_layers_and_rank_pattern_shape_the_adapters(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    trainer = LocalTrainer(tiny_bundle(), examples)
    trainer.add_lora(
        LoraSpec(
            rank=4, target_modules=("q_proj", "v_proj"), layers=(1, 3), rank_pattern={"v_proj": 2}
        )
    )
    state = trainer.lora_state()
    assert len(state) == 2 * 2 * 2
    assert all(".layers.1." in n or ".layers.3." in n for n in state)
    for name, tensor in state.items():
        rank = 2 if "v_proj" in name else 4
        assert rank in tensor.shape, (name, tensor.shape)


def test_fresh_adapters_are_the_same_everywhere_and_start_as_the_base(
    tiny_bundle: Callable[[], ModelBundle], make_trainer: Callable[[], LocalTrainer]
) -> None:
    a, b = make_trainer(), make_trainer()
    state = a.lora_state()
    assert adapters_equal(state, b.lora_state())
    assert all(not t.any() for n, t in state.items() if "lora_B" in n)
    assert all(t.abs().sum() > 0 for n, t in state.items() if "lora_A" in n)
    # B = 0, so the adapted model computes exactly what the base does.
    base = tiny_bundle().model
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.equal(a.model(input_ids=ids).logits, base(input_ids=ids).logits)


def test_lora_state_is_a_detached_fp32_copy(make_trainer: Callable[[], LocalTrainer]) -> None:
    trainer = make_trainer()
    state = trainer.lora_state()
    assert state
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        assert not tensor.requires_grad
        assert ".default." not in name  # PEFT's stable names, without the adapter name
        tensor.add_(1.0)
    fresh = trainer.lora_state()
    for name in state:
        assert torch.equal(fresh[name] + 1.0, state[name])


def test_lora_state_of_a_bf16_model_is_fp32(tiny_cache: Path, examples: list[Example]) -> None:
    from fedft.runtime.models import TINY_VERSION

    bundle = load_model(str(tiny_cache / "models" / TINY_VERSION), dtype=torch.bfloat16)
    trainer = LocalTrainer(bundle, examples)
    trainer.add_lora(SPEC)
    state = trainer.lora_state()
    assert all(t.dtype == torch.float32 for t in state.values())
    changed = {n: torch.full_like(t, 0.5) for n, t in state.items()}
    trainer.load_lora_state(changed)
    assert adapters_equal(trainer.lora_state(), changed)
    base = [p for n, p in trainer.model.named_parameters() if "lora_" not in n]
    assert all(p.dtype == torch.bfloat16 for p in base)


def test_load_lora_state_round_trips(make_trainer: Callable[[], LocalTrainer]) -> None:
    trainer = make_trainer()
    gen = torch.Generator().manual_seed(5)
    new = {n: torch.randn(t.shape, generator=gen) for n, t in trainer.lora_state().items()}
    trainer.load_lora_state(new)
    assert adapters_equal(trainer.lora_state(), new)
    # The model really uses them: loading into a second model gives the same outputs.
    other = make_trainer()
    other.load_lora_state(trainer.lora_state())
    ids = torch.tensor([[10, 20, 30, 40]])
    with torch.no_grad():
        assert torch.equal(trainer.model(input_ids=ids).logits, other.model(input_ids=ids).logits)


def test_load_lora_state_rejects_wrong_names_and_shapes(
    make_trainer: Callable[[], LocalTrainer],
) -> None:
    trainer = make_trainer()
    state = trainer.lora_state()
    first = sorted(state)[0]
    missing = {n: t for n, t in state.items() if n != first}
    with pytest.raises(ValueError, match="adapter names differ"):
        trainer.load_lora_state(missing)
    with pytest.raises(ValueError, match="unexpected"):
        trainer.load_lora_state({**state, "extra.lora_A.weight": torch.zeros(1)})
    renamed = {n.replace("lora_A", "lora_X"): t for n, t in state.items()}
    with pytest.raises(ValueError, match="adapter names differ"):
        trainer.load_lora_state(renamed)
    wrong_shape = {**state, first: torch.zeros(state[first].shape[0] + 1, state[first].shape[1])}
    with pytest.raises(ValueError, match=f"{first}: shape"):
        trainer.load_lora_state(wrong_shape)
    transposed = {**state, first: state[first].t().contiguous()}
    with pytest.raises(ValueError, match="shape"):
        trainer.load_lora_state(transposed)
    # Nothing was changed by the rejected loads.
    assert adapters_equal(trainer.lora_state(), state)


def test_training_lowers_the_training_loss(
    make_trainer: Callable[[], LocalTrainer], examples: list[Example]
) -> None:
    trainer = make_trainer()
    before = held_out_loss(trainer.bundle, examples, max_length=MAX_LENGTH)
    stats = trainer.train(steps=15, batch_size=8, lr=3e-3, seed=1)
    after = held_out_loss(trainer.bundle, examples, max_length=MAX_LENGTH)
    assert stats.steps == 15
    assert stats.examples == 15 * 8
    assert 0 < stats.loss < before.loss + 0.5
    assert after.tokens == before.tokens
    assert after.loss < before.loss - 0.1, (before, after)
    assert not trainer.model.training


def test_training_is_deterministic_per_seed(make_trainer: Callable[[], LocalTrainer]) -> None:
    runs = {}
    for label, seed in (("a", 7), ("b", 7), ("c", 8)):
        trainer = make_trainer()
        stats = trainer.train(steps=4, batch_size=4, lr=3e-3, seed=seed)
        runs[label] = (stats, trainer.lora_state())
    assert runs["a"][0] == runs["b"][0]
    assert adapters_equal(runs["a"][1], runs["b"][1])
    assert not adapters_equal(runs["a"][1], runs["c"][1])
    assert runs["a"][0].loss != runs["c"][0].loss


def test_dropout_is_seeded_too(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    spec = LoraSpec(rank=4, alpha=8, dropout=0.3)
    states = []
    for _ in range(2):
        trainer = LocalTrainer(tiny_bundle(), examples, max_length=MAX_LENGTH)
        trainer.add_lora(spec)
        trainer.train(steps=3, batch_size=4, lr=3e-3, seed=3)
        states.append(trainer.lora_state())
    assert adapters_equal(states[0], states[1])


def test_train_leaves_the_global_rng_alone(make_trainer: Callable[[], LocalTrainer]) -> None:
    trainer = make_trainer()
    torch.manual_seed(99)
    before = torch.get_rng_state()
    trainer.train(steps=2, batch_size=4, lr=1e-3, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    before = torch.get_rng_state()
    make_trainer()  # LoRA injection is seeded without touching the global state either
    assert torch.equal(torch.get_rng_state(), before)


def test_saved_adapter_loads_with_peft(
    tmp_path: Path,
    tiny_bundle: Callable[[], ModelBundle],
    make_trainer: Callable[[], LocalTrainer],
    examples: list[Example],
) -> None:
    from peft import PeftModel

    trainer = make_trainer()
    trainer.train(steps=5, batch_size=8, lr=3e-3, seed=2)
    folder = tmp_path / "adapter"
    trainer.save_adapter(folder)
    assert (folder / "adapter_model.safetensors").is_file()
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 4
    assert config["lora_alpha"] == 8
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}
    assert config["peft_type"] == "LORA"

    fresh = tiny_bundle()
    loaded = PeftModel.from_pretrained(fresh.model, str(folder))
    loaded.eval()
    tok = trainer.bundle.tokenizer
    batch = collate([encode(tok, ex, MAX_LENGTH) for ex in examples[:4]], tok.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = trainer.model(**inputs).logits
        got = loaded(**inputs).logits
        base = tiny_bundle().model(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(base, expected, atol=1e-4)  # the adapter matters


def test_save_model_without_adapters_writes_loadable_full_weights(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = LocalTrainer(tiny_bundle(), examples, max_length=MAX_LENGTH)
    with torch.no_grad():
        next(trainer.model.parameters()).add_(0.5)  # a tuned model, not the stock one
    trainer.save_model(tmp_path / "model")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    for (name, mine), (_, theirs) in zip(
        trainer.model.named_parameters(), loaded.named_parameters(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert AutoTokenizer.from_pretrained(tmp_path / "model").pad_token_id is not None


def test_batches_and_loss_are_deterministic_and_leave_no_gradients(
    make_trainer: Callable[[], LocalTrainer],
) -> None:
    trainer = make_trainer()
    first = next(trainer.batches(batch_size=3, seed=5))
    again = next(trainer.batches(batch_size=3, seed=5))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert first["input_ids"].shape[0] == 3
    loss = trainer.loss(first)
    assert loss > 0
    assert loss == trainer.loss(first)
    assert all(p.grad is None for p in trainer.model.parameters())
    with pytest.raises(ValueError, match="batch_size"):
        next(trainer.batches(batch_size=0, seed=1))


def test_load_lora_state_matches_peft_loader_in_bf16(
    tiny_cache: Path, examples: list[Example]
) -> None:
    """Our direct copy into the live adapter leaves what PEFT's own loader leaves."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from fedft.runtime.models import TINY_VERSION

    def bf16_trainer() -> LocalTrainer:
        bundle = load_model(str(tiny_cache / "models" / TINY_VERSION), dtype=torch.bfloat16)
        trainer = LocalTrainer(bundle, examples)
        trainer.add_lora(SPEC)
        return trainer

    ours, theirs = bf16_trainer(), bf16_trainer()
    gen = torch.Generator().manual_seed(9)
    new = {n: torch.randn(t.shape, generator=gen) / 3 for n, t in ours.lora_state().items()}
    ours.load_lora_state(new)
    dtypes = {n: t.dtype for n, t in get_peft_model_state_dict(theirs.model).items()}
    set_peft_model_state_dict(theirs.model, {n: t.to(dtypes[n]) for n, t in new.items()})
    a = get_peft_model_state_dict(ours.model)
    b = get_peft_model_state_dict(theirs.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(a[n].dtype == dtypes[n] for n in a)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_multi_tensor_optimizer_path_gives_identical_weights(
    make_trainer: Callable[[], LocalTrainer], monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    """Small trainable sets take the faster multi-tensor path; it must not change the result."""
    import fedft.runtime.trainer as trainer_module

    def trained() -> dict[str, torch.Tensor]:
        trainer = make_trainer()
        trainer.train(steps=3, batch_size=4, lr=1e-2, seed=1, optimizer=optimizer)
        return trainer.lora_state()

    fast = trained()
    monkeypatch.setattr(trainer_module, "_FOREACH_MAX_ELEMENTS", 0)  # torch's default path
    assert trainer_module.foreach_for([torch.zeros(1)]) is None
    slow = trained()
    assert adapters_equal(fast, slow)
    assert not adapters_equal(fast, make_trainer().lora_state())  # training did move them


@pytest.mark.parametrize("micro_batch", [1, 3])
def test_micro_batches_take_the_same_steps_as_the_whole_batch(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example], micro_batch: int
) -> None:
    def trained(micro: int | None, optimizer: str) -> tuple[float, dict[str, torch.Tensor]]:
        trainer = LocalTrainer(tiny_bundle(), examples, micro_batch=micro)
        trainer.add_lora(LoraSpec(rank=4, target_modules=("q_proj", "v_proj")))
        # Unclipped SGD shows any mis-scaled part (AdamW would normalise a uniform factor away).
        stats = trainer.train(
            steps=3, batch_size=4, lr=0.5 if optimizer == "sgd" else 1e-2, seed=7,
            optimizer=optimizer, max_grad_norm=None,
        )  # fmt: skip
        return stats.loss, {k: v.clone() for k, v in trainer.lora_state().items()}

    for optimizer in ("sgd", "adamw"):
        whole_loss, whole = trained(None, optimizer)
        loss, parts = trained(micro_batch, optimizer)
        assert loss == pytest.approx(whole_loss, rel=1e-6)
        assert any(float(t.abs().sum()) > 0 for n, t in whole.items() if "lora_B" in n)
        for name, tensor in whole.items():
            # Summation order differs by part; AdamW's normalisation amplifies that to ~1e-6.
            torch.testing.assert_close(parts[name], tensor, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="micro_batch"):
        LocalTrainer(tiny_bundle(), examples, micro_batch=0)


def test_bf16_autocast_trains_close_to_fp32_with_fp32_weights(
    tiny_bundle: Callable[[], ModelBundle], examples: list[Example]
) -> None:
    def trained(autocast: str) -> tuple[float, dict[str, torch.Tensor]]:
        trainer = LocalTrainer(tiny_bundle(), examples, autocast=autocast)
        trainer.add_lora(LoraSpec(rank=4, target_modules=("q_proj", "v_proj")))
        stats = trainer.train(steps=3, batch_size=4, lr=1e-2, seed=3)
        return stats.loss, {k: v.clone() for k, v in trainer.lora_state().items()}

    loss32, weights32 = trained("none")
    loss16, weights16 = trained("bf16")
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    assert loss16 != loss32  # the forward really ran in bf16
    assert all(t.dtype == torch.float32 for t in weights16.values())  # fp32 master weights
    for name, tensor in weights32.items():
        torch.testing.assert_close(weights16[name], tensor, rtol=0.1, atol=2e-2)
    with pytest.raises(ValueError, match="autocast"):
        LocalTrainer(tiny_bundle(), examples, autocast="fp8")
