"""Tests for the trainer's paper-faithful knobs: optional gradient clipping, persistent data."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.trainer import LoraSpec
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.options import FirstOrderOptions, local_train


def make_trainer(bundle: ModelBundle, n: int) -> LocalTrainer:
    data = [Example(f"question {i}?", f"answer number {i}.") for i in range(n)]
    trainer = LocalTrainer(bundle, data, max_length=32)
    trainer.add_lora(LoraSpec(rank=2))
    return trainer


def one_sgd_step_delta(trainer: LocalTrainer, max_grad_norm: float | None) -> float:
    """Norm of the change of the trainable weights after one SGD step of lr 1."""
    before = trainer.lora_state()
    trainer.train(
        steps=1, batch_size=2, lr=1.0, seed=3, optimizer="sgd", max_grad_norm=max_grad_norm
    )
    after = trainer.lora_state()
    trainer.load_lora_state(before)
    return float(torch.cat([(after[k] - before[k]).reshape(-1) for k in before]).norm())


def test_max_grad_norm_none_leaves_gradients_unclipped(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    trainer = make_trainer(tiny_bundle(), 4)
    unclipped = one_sgd_step_delta(trainer, None)
    # With SGD at lr 1 the step is the gradient: a tiny norm caps it, None lets it through.
    assert one_sgd_step_delta(trainer, 1e-6) == pytest.approx(1e-6, rel=1e-3)
    assert unclipped > 1e-3
    assert one_sgd_step_delta(trainer, 1e9) == pytest.approx(unclipped, rel=1e-6)
    with pytest.raises(ValueError, match="max_grad_norm"):
        trainer.train(steps=1, batch_size=1, lr=1.0, seed=0, max_grad_norm=0.0)


def test_default_still_clips_at_one(tiny_bundle: Callable[[], ModelBundle]) -> None:
    trainer = make_trainer(tiny_bundle(), 4)
    before = trainer.lora_state()
    trainer.train(steps=1, batch_size=2, lr=1.0, seed=3, optimizer="sgd")
    default = trainer.lora_state()
    trainer.load_lora_state(before)
    trainer.train(steps=1, batch_size=2, lr=1.0, seed=3, optimizer="sgd", max_grad_norm=1.0)
    assert all(torch.equal(default[k], v) for k, v in trainer.lora_state().items())


def seen_in_stream(trainer: LocalTrainer, data_seed: int, offset: int, count: int) -> list[int]:
    """Indices of the next ``count`` examples of the persistent stream (batch size 1)."""
    by_ids = {tuple(e.input_ids): i for i, e in enumerate(trainer.encoded)}
    stream = trainer._stream(1, data_seed, offset)
    return [by_ids[tuple(next(stream)[0].input_ids)] for _ in range(count)]


def test_persistent_iterator_covers_every_example_before_repeating_across_rounds(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    n, steps = 7, 3  # fewer local steps than examples: a fresh permutation would miss data
    trainer = make_trainer(tiny_bundle(), n)
    state = Payload()
    config = FirstOrderOptions(data_order="persistent").training_config()
    offsets = []
    for round_seed in (11, 12, 13, 14, 15):
        held = state.tensors.get("data.cursor")
        offsets.append(0 if held is None else int(held[1]))
        stats = local_train(
            trainer, state, config, steps=steps, batch_size=1, lr=1e-3, seed=round_seed
        )
        assert stats.examples == steps
    cursor = state.tensors["data.cursor"]
    assert int(cursor[0]) == 11  # the first task's seed keeps driving the stream
    assert offsets == [0, 3, 6, 9, 12]
    assert int(cursor[1]) == 15
    visited = seen_in_stream(trainer, 11, 0, 15)
    # The rounds, one after another, read the stream in order: each pass is a permutation.
    assert sorted(visited[:n]) == list(range(n))
    assert sorted(visited[n : 2 * n]) == list(range(n))
    assert seen_in_stream(trainer, 11, 3, 3) == visited[3:6]


def test_fresh_order_keeps_no_cursor(tiny_bundle: Callable[[], ModelBundle]) -> None:
    trainer = make_trainer(tiny_bundle(), 5)
    state = Payload()
    config = FirstOrderOptions().training_config()
    assert config == {}  # the defaults add nothing to a task: its bytes stay as they were
    local_train(trainer, state, config, steps=2, batch_size=1, lr=1e-3, seed=1)
    assert state.tensors == {}
    assert FirstOrderOptions(max_grad_norm=None).training_config()["max_grad_norm"] == 0.0
    assert FirstOrderOptions(max_grad_norm=None).max_grad_norm == 0.0
    assert FirstOrderOptions(max_grad_norm=0.0).training_config()["max_grad_norm"] == 0.0
    assert FirstOrderOptions(max_grad_norm=2.0).training_config() == {"max_grad_norm": 2.0}
