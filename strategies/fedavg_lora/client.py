"""Client half of ``fedavg_lora``: load the global adapter, train locally, send the adapter back."""

from __future__ import annotations

import torch

from fedft.core import ClientStrategy, Payload, Trainer
from fedft.strategies.fedavg_lora.config import FedAvgLoRAConfig
from fedft.strategies.fedavg_lora.server import adapter_delta
from fedft.strategies.options import train_lora


class FedAvgLoRAClient(ClientStrategy[FedAvgLoRAConfig]):
    """Trains the adapter on local data starting from the global one."""

    def prepare(self, trainer: Trainer) -> None:
        """Inject the configured LoRA adapters."""
        trainer.add_lora(self.config.lora_spec())

    def initial_state(self, trainer: Trainer) -> Payload:
        """Return the freshly initialised adapter (B = 0, so the model starts as the base)."""
        return Payload(tensors=trainer.lora_state())

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Train from the task's adapter for the configured steps; reply with the new adapter."""
        return train_lora(trainer, task, local_state)

    def load_global(self, state: Payload, trainer: Trainer) -> None:
        """Install the global adapter."""
        trainer.load_lora_state(state.tensors)

    def update_vector(self, task: Payload, reply: Payload, trainer: Trainer) -> torch.Tensor:
        """The trained adapter minus the task's, in the task's (the global adapter's) order."""
        return adapter_delta(reply.tensors, task.tensors)
