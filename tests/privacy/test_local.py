"""Client-side DP: the reply's update is clipped and noised; bookkeeping tensors pass unchanged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dp_accounting as dpa
import pytest
import torch

from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.trainer import Trainer
from fedft.privacy.config import LocalDPConfig, local_dp_config_from_flags
from fedft.privacy.ledger import LEDGER_FILE, REPLACE_ONE, append_jsonl
from fedft.privacy.local import LocalDPClient, privatize, release_entry, worst_client
from fedft.privacy.mechanisms import SecureGaussian
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
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


def test_flags_need_a_clip_for_noise() -> None:
    assert local_dp_config_from_flags(clip=None, noise=0.0) is None
    assert local_dp_config_from_flags(clip=0.5, noise=2.0) == LocalDPConfig(0.5, 2.0)
    with pytest.raises(UsageError, match="--local-dp-noise needs --local-dp-clip"):
        local_dp_config_from_flags(clip=None, noise=1.0)


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


class _IndicesOnly(FedAvgLoRAClient):
    """A reply with nothing derived from local data (like a resync request)."""

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        return Payload(tensors={"seeds": torch.tensor([1, 2, 3])})


def test_only_replies_with_an_update_are_releases(tiny_bundle: Callable[[], ModelBundle]) -> None:
    config = FedAvgLoRAConfig(rank=2, local_steps=1, batch_size=2)
    local = LocalDPConfig(clip=0.5, noise_multiplier=1.5)
    trainer = LocalTrainer(tiny_bundle(), [Example("q?", "a.")], max_length=32)
    real = LocalDPClient(FedAvgLoRAClient(config), local)
    real.prepare(trainer)
    task = Payload(
        tensors=real.initial_state(trainer).tensors,
        config={"seed": 1, "local_steps": 1, "batch_size": 2, "lr": 0.01, "round": 4},
    )
    assert real.last_release(4) is None  # nothing ran yet
    real.run(task, Payload(), trainer)
    entry = real.last_release(4)
    assert entry is not None
    assert (entry.round, entry.noise_multiplier, entry.clip_norm) == (4, 1.5, 0.5)
    assert (entry.sampling_rate, entry.participants, entry.adjacency) == (1.0, 1, REPLACE_ONE)
    quiet = LocalDPClient(_IndicesOnly(config), local)
    quiet.run(task, Payload(), trainer)
    assert quiet.last_release(4) is None


def test_worst_client_is_the_one_with_most_releases(tmp_path: Path) -> None:
    local = LocalDPConfig(clip=1.0, noise_multiplier=3.0)
    for name, count in (("a", 1), ("b", 3), ("c", 2)):
        for r in range(count):
            append_jsonl(tmp_path / name / LEDGER_FILE, release_entry(local, r + 1))
    (tmp_path / "no-ledger").mkdir()
    summary = worst_client(sorted(tmp_path.iterdir()), delta=1e-6)
    assert summary["local_dp_releases"] == 3
    assert summary["local_dp_delta"] == 1e-6
    # Replace-one doubles the sensitivity: 3 releases at z are one Gaussian at z / 2 / sqrt(3).
    exact = dpa.get_epsilon_gaussian(3.0 / 2 / 3**0.5, 1e-6)
    assert summary["local_dp_epsilon"] == pytest.approx(exact, rel=1e-3)
    assert worst_client([tmp_path / "no-ledger"]) == {}
