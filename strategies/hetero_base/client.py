"""Client half shared by the heterogeneous strategies: train the layout the task names."""

from __future__ import annotations

from fedft.core.payload import Payload
from fedft.core.strategy import ClientStrategy
from fedft.core.trainer import Trainer
from fedft.strategies.hetero_base.config import HeteroLoRAConfig
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.options import train_lora


class HeteroLoRAClient(ClientStrategy[HeteroLoRAConfig]):
    """Switches to the task's LoRA layout (depth and ranks), trains it, returns its factors."""

    def prepare(self, trainer: Trainer) -> None:
        """Add the full-depth global adapter; per-task layouts are added beside it on demand."""
        trainer.add_lora(self.config.global_spec())

    def initial_state(self, trainer: Trainer) -> Payload:
        """The global adapter as PEFT initialises it: random A (every rank's A slices it), B = 0."""
        trainer.use_lora(self.config.global_spec())
        return Payload(tensors=trainer.lora_state())

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Train the task's layout from the factors the server sent."""
        cfg = self.config
        layout = Layout.from_config(task.config)
        trainer.use_lora(
            layout.lora_spec(
                alpha=cfg.alpha, dropout=cfg.dropout, target_modules=cfg.target_modules
            )
        )
        return train_lora(trainer, task, local_state)

    def load_global(self, state: Payload, trainer: Trainer) -> None:
        """Install the global adapter (full depth, the global rank)."""
        trainer.use_lora(self.config.global_spec())
        trainer.load_lora_state(state.tensors)
