"""Client half of fedavg_lora on a real tiny Llama with PEFT adapters."""

from __future__ import annotations

import torch

from fedft.core.payload import Payload
from fedft.runtime.data import Example
from fedft.runtime.models import load_model
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.fedavg_lora import FedAvgLoRAClient, FedAvgLoRAConfig

EXAMPLES = [Example(f"What is {i} plus {i}?", f"It is {2 * i}.", "math") for i in range(24)]


def make_trainer() -> LocalTrainer:
    return LocalTrainer(load_model("tiny"), EXAMPLES, max_length=48)


def test_initial_state_is_a_zero_b_adapter_on_every_target() -> None:
    config = FedAvgLoRAConfig(rank=4, target_modules=("q_proj", "v_proj"))
    client = FedAvgLoRAClient(config)
    trainer = make_trainer()
    client.prepare(trainer)
    client.prepare(trainer)  # idempotent
    state = client.initial_state(trainer).tensors
    assert len(state) == 4 * 2 * 2  # 4 layers x (q, v) x (A, B)
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        if "lora_B" in name:
            assert not tensor.any()
            assert tensor.shape[1] == 4
        else:
            assert tensor.abs().sum() > 0
            assert tensor.shape[0] == 4


def test_run_trains_from_the_task_adapter_and_reports_examples() -> None:
    config = FedAvgLoRAConfig(rank=4, local_steps=5, lr=5e-3, batch_size=4)
    client = FedAvgLoRAClient(config)
    trainer = make_trainer()
    client.prepare(trainer)
    start = client.initial_state(trainer)
    task = Payload(
        tensors=start.tensors,
        config={"round": 1, "seed": 3, "local_steps": 5, "batch_size": 4, "lr": 5e-3},
    )
    reply = client.run(task, Payload(), trainer)
    assert set(reply.tensors) == set(start.tensors)
    assert reply.metrics["num_examples"] == len(EXAMPLES)
    assert reply.metrics["steps"] == 5
    changed = [n for n in start.tensors if not torch.equal(start.tensors[n], reply.tensors[n])]
    assert any("lora_B" in n for n in changed)
    # The same task again gives the same update: local training is deterministic per task seed.
    again = client.run(task, Payload(), trainer)
    assert all(torch.equal(again.tensors[n], reply.tensors[n]) for n in reply.tensors)


def test_load_global_installs_the_adapter() -> None:
    client = FedAvgLoRAClient(FedAvgLoRAConfig(rank=2))
    trainer = make_trainer()
    client.prepare(trainer)
    state = {n: torch.full_like(t, 0.5) for n, t in trainer.lora_state().items()}
    client.load_global(Payload(tensors=state), trainer)
    assert all(torch.equal(trainer.lora_state()[n], t) for n, t in state.items())
