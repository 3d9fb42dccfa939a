"""Client-side DP: the reply's update is clipped and noised; bookkeeping tensors pass unchanged."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedft.client.data import Example
from fedft.client.models import ModelBundle
from fedft.client.trainer import LocalTrainer
from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.privacy.local import LocalDPClient, LocalDPConfig, privatize
from fedft.privacy.mechanisms import SecureGaussian
from fedft.strategies.fedavg_lora import FedAvgLoRAClient, FedAvgLoRAConfig

KEY = bytes(range(32))


def update_norm(task: Payload, reply: Payload) -> float:
    parts = [
        (t.double() - task.tensors[n].double() if n in task.tensors else t.double()).reshape(-1)
        for n, t in reply.tensors.items()
        if t.is_floating_point()
    ]
    return float(torch.linalg.vector_norm(torch.cat(parts)))


def test_relative_tensors_are_clipped_around_the_task() -> None:
    task = Payload(tensors={"a": torch.ones(3, 3)})
    reply = Payload(tensors={"a": torch.ones(3, 3) + 2.0}, metrics={"num_examples": 4})
    out = privatize(task, reply, LocalDPConfig(clip=0.5, noise_multiplier=0.0), SecureGaussian(KEY))
    assert update_norm(task, out) == pytest.approx(0.5, rel=1e-6)
    assert out.metrics == {"num_examples": 4}


def test_scalar_updates_get_noise_and_indices_pass() -> None:
    task = Payload(tensors={"d": torch.zeros(5)})
    reply = Payload(
        tensors={"i": torch.arange(4, dtype=torch.int16), "c": torch.zeros(20_000)},
    )
    config = LocalDPConfig(clip=2.0, noise_multiplier=1.5)
    out = privatize(task, reply, config, SecureGaussian(KEY))
    assert torch.equal(out.tensors["i"], reply.tensors["i"])
    assert out.tensors["c"].dtype == torch.float32
    assert float(out.tensors["c"].double().std()) == pytest.approx(3.0, rel=0.03)
    empty = Payload(metrics={"version": 0})
    assert privatize(task, empty, config, SecureGaussian(KEY)) is empty


def test_bad_settings() -> None:
    with pytest.raises(UsageError, match="clip"):
        LocalDPConfig(clip=0.0, noise_multiplier=1.0)
    with pytest.raises(UsageError, match="noise"):
        LocalDPConfig(clip=1.0, noise_multiplier=-1.0)


def test_wraps_a_real_client_half(tiny_bundle: Callable[[], ModelBundle]) -> None:
    config = FedAvgLoRAConfig(rank=2, local_steps=2, batch_size=2, lr=0.05)
    client = LocalDPClient(FedAvgLoRAClient(config), LocalDPConfig(clip=1e-3, noise_multiplier=0))
    data = [Example(f"question {i}?", f"answer {i}.") for i in range(4)]
    trainer = LocalTrainer(tiny_bundle(), data, max_length=32)
    client.prepare(trainer)
    initial = client.initial_state(trainer)
    task = Payload(
        tensors=initial.tensors,
        config={"seed": 1, "local_steps": 2, "batch_size": 2, "lr": 0.05, "round": 1},
    )
    reply = client.run(task, Payload(), trainer)
    assert set(reply.tensors) == set(initial.tensors)
    assert update_norm(task, reply) == pytest.approx(1e-3, rel=1e-3)
