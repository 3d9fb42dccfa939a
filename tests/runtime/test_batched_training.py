"""Clients trained together equal clients trained one at a time, to fp32 tolerance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedft.core.trainer import LoraSpec
from fedft.runtime.batched_training import TrainJob, train_together
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer

FULL = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))
SHALLOW = LoraSpec(
    rank=4, alpha=8, target_modules=("q_proj", "v_proj"), layers=(2, 3), rank_pattern={"v_proj": 2}
)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _trainers(
    bundle: ModelBundle, examples: list[Example], count: int, **options: Any
) -> list[LocalTrainer]:
    shards = [examples[i::97][:12] for i in range(count)]
    trainers = [LocalTrainer(bundle, shard, max_length=40, **options) for shard in shards]
    trainers[0].add_lora(FULL)
    return trainers


def _start(trainer: LocalTrainer, spec: LoraSpec, seed: int) -> dict[str, torch.Tensor]:
    trainer.use_lora(spec)
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(t.shape, generator=gen) * 0.1 for n, t in trainer.lora_state().items()}


def _sequential(trainer: LocalTrainer, job: TrainJob) -> tuple[float, dict[str, torch.Tensor]]:
    assert job.spec is not None
    assert job.tensors is not None
    trainer.use_lora(job.spec)
    trainer.load_lora_state(job.tensors)
    stats = trainer.train(
        steps=job.steps,
        batch_size=job.batch_size,
        lr=job.lr,
        seed=job.seed,
        optimizer=job.optimizer,
        max_grad_norm=job.max_grad_norm,
        data_seed=job.data_seed,
        data_offset=job.data_offset,
    )
    return stats.loss, trainer.lora_state()


CASES = {
    "fedavg": [{"spec": FULL}, {"spec": FULL}, {"spec": FULL}],
    "layouts": [{"spec": FULL}, {"spec": SHALLOW}, {"spec": FULL, "lr": 3e-3}],
    "mixed": [
        {"spec": FULL, "steps": 2},
        {"spec": SHALLOW, "optimizer": "sgd", "lr": 0.5, "max_grad_norm": None},
        {"spec": FULL, "data_seed": 11, "data_offset": 7, "batch_size": 3},
    ],
}


@pytest.mark.parametrize("micro_batch", [None, 3], ids=["whole", "micro3"])
@pytest.mark.parametrize("case", list(CASES))
def test_train_together_equals_training_each_client_alone(
    tiny_bundle: Callable[[], ModelBundle],
    chatterbot_examples: list[Example],
    case: str,
    micro_batch: int | None,
) -> None:
    trainers = _trainers(tiny_bundle(), chatterbot_examples, 3, micro_batch=micro_batch)
    jobs = []
    for number, (trainer, extra) in enumerate(zip(trainers, CASES[case], strict=True)):
        values: dict[str, Any] = {"steps": 3, "batch_size": 4, "lr": 1e-2, "seed": 100 + number}
        values.update(extra)
        spec = values.pop("spec")
        jobs.append(TrainJob(trainer, spec, _start(trainer, spec, number), **values))
    trainers[0].use_lora(FULL)
    together = train_together(jobs)
    assert trainers[0].bundle.lora_spec == FULL  # the shared model's active layout is kept
    for job, result in zip(jobs, together, strict=True):
        loss, tensors = _sequential(job.trainer, job)
        assert result.stats.loss == pytest.approx(loss, rel=1e-5)
        assert result.stats.steps == job.steps
        assert tensors.keys() == result.tensors.keys()
        for name in tensors:
            torch.testing.assert_close(result.tensors[name], tensors[name], **TOL)
        assert any(not torch.equal(result.tensors[n], job.tensors[n]) for n in tensors)  # type: ignore[index]


def test_train_together_leaves_the_models_own_adapter_alone(
    tiny_bundle: Callable[[], ModelBundle], chatterbot_examples: list[Example]
) -> None:
    trainers = _trainers(tiny_bundle(), chatterbot_examples, 2)
    before = trainers[0].lora_state()
    jobs = [
        TrainJob(t, FULL, _start(t, FULL, i), steps=2, batch_size=2, lr=0.1, seed=i)
        for i, t in enumerate(trainers)
    ]
    train_together(jobs)
    after = trainers[0].lora_state()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_mismatched_adapters_and_bad_jobs_are_refused(
    tiny_bundle: Callable[[], ModelBundle], chatterbot_examples: list[Example]
) -> None:
    trainers = _trainers(tiny_bundle(), chatterbot_examples, 2)
    wrong = _start(trainers[0], SHALLOW, 0)
    with pytest.raises(ValueError, match="adapter names differ"):
        train_together([TrainJob(trainers[0], FULL, wrong, steps=1, batch_size=2, lr=0.1, seed=0)])
    with pytest.raises(ValueError, match="steps must be >= 1"):
        train_together([TrainJob(trainers[0], FULL, None, steps=0, batch_size=2, lr=0.1, seed=0)])
    other = LocalTrainer(tiny_bundle(), chatterbot_examples[:4])
    other.add_lora(FULL)
    with pytest.raises(ValueError, match="share one model"):
        train_together(
            [
                TrainJob(trainers[0], FULL, None, steps=1, batch_size=2, lr=0.1, seed=0),
                TrainJob(other, FULL, None, steps=1, batch_size=2, lr=0.1, seed=0),
            ]
        )
    assert train_together([]) == []
