"""What a strategy's client half may ask of the host's trainer runtime (a structural protocol)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class LoraSpec:
    """Where LoRA adapters go and how large they are.

    ``rank_pattern`` maps a module-name pattern to a rank that overrides ``rank``, and ``layers``
    restricts adapters to some transformer layers; both exist for heterogeneous devices.
    """

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoRA needs at least one target module")


@dataclass(frozen=True)
class TrainStats:
    """What one call of local training did."""

    steps: int
    examples: int
    loss: float


@runtime_checkable
class Trainer(Protocol):
    """The local training runtime bound to one client's data.

    Every host (simulation, edge daemon, Flower client app) provides the same implementation,
    ``fedft.runtime.trainer.LocalTrainer``; strategies only see this protocol.
    """

    @property
    def model(self) -> torch.nn.Module:
        """The model being trained (with adapters, once added)."""
        ...

    @property
    def num_examples(self) -> int:
        """Number of local training examples."""
        ...

    def add_lora(self, spec: LoraSpec) -> None:
        """Inject LoRA adapters (idempotent for the same spec) and freeze everything else."""
        ...

    def use_lora(self, spec: LoraSpec) -> None:
        """Make ``spec``'s adapters the active, trainable ones, adding them beside others if new.

        Heterogeneous strategies give each device its own layout; hosts that share one model
        between virtual clients keep one named adapter per layout.
        """
        ...

    def lora_state(self) -> dict[str, torch.Tensor]:
        """Return a detached fp32 copy of the adapter tensors under stable names."""
        ...

    def load_lora_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Overwrite the adapter tensors; names and shapes must match :meth:`lora_state`."""
        ...

    def train(
        self,
        *,
        steps: int,
        batch_size: int,
        lr: float,
        seed: int,
        optimizer: str = "adamw",
        max_grad_norm: float | None = 1.0,
        data_seed: int | None = None,
        data_offset: int = 0,
    ) -> TrainStats:
        """Run ``steps`` first-order steps (``adamw`` or ``sgd``) on the trainable parameters.

        Trainable means ``requires_grad``; the run is deterministic for ``seed``. Gradients are
        clipped to ``max_grad_norm`` (None: unclipped). With ``data_seed`` the batches continue
        the client's persistent shuffled stream at example ``data_offset``.
        """
        ...

    def batches(self, *, batch_size: int, seed: int) -> Iterator[Any]:
        """Yield local training batches forever, reshuffled each epoch, seeded by ``seed``."""
        ...

    def loss(self, batch: Any) -> float:
        """Return the mean token loss of the model on ``batch``: eval mode, no gradients."""
        ...
