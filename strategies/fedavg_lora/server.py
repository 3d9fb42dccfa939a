"""Server half of ``fedavg_lora``: example-weighted mean of adapters, streamed in one pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedft.core import ClientInfo, LinearUpdates, MetricValue, Payload, Result, Task
from fedft.strategies.fedavg_lora.config import FedAvgLoRAConfig


def adapter_mismatch(
    reference: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]
) -> str | None:
    """Return why ``tensors`` cannot be averaged with ``reference``, or None if they fit."""
    if set(tensors) != set(reference):
        return "adapter names differ from the global adapter"
    for name, t in tensors.items():
        if t.shape != reference[name].shape:
            return f"{name} has shape {tuple(t.shape)}, expected {tuple(reference[name].shape)}"
        if not t.is_floating_point():
            return f"{name} is not a floating-point tensor"
        # In the global model's dtype: 1e300 is finite in float64 but +inf once averaged
        # into a float32 adapter (defect 3).
        if not bool(torch.isfinite(t.to(reference[name].dtype)).all()):
            return f"{name} has NaN or Inf values, or values out of range for the global model"
    return None


class FedAvgLoRAServer(LinearUpdates[FedAvgLoRAConfig]):
    """FedAvg over LoRA adapters, weighted by each client's number of examples.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data"
    (arXiv:1602.05629), applied to adapters as in FedIT (arXiv:2305.05644). Averaging A and B
    separately is not averaging B·A; the heterogeneous-rank strategies aggregate exactly.
    The round is :class:`LinearUpdates`' default: the global adapter plus the example-weighted
    mean of the clients' adapter deltas, summed in float64.
    """

    def __init__(self, config: FedAvgLoRAConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.adapter: dict[str, torch.Tensor] = {}

    def initialize(self, initial: Payload) -> None:
        """Start from the client half's freshly initialised adapter."""
        if not initial.tensors:
            raise ValueError("fedavg_lora needs the initial adapter tensors")
        self.adapter = {n: t.detach().to(torch.float32).clone() for n, t in initial.tensors.items()}

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Sample clients and send each the global adapter with its local-training settings."""
        if not self.adapter:
            raise RuntimeError("initialize() or load_state_dict() must run before configure()")
        chosen = self.config.sample(clients, seed=self.seed, server_round=server_round)
        return [
            Task(
                client_id=c.client_id,
                payload=Payload(
                    tensors=dict(self.adapter),
                    config=self.config.task_config(
                        seed=self.seed, server_round=server_round, client_id=c.client_id
                    ),
                ),
            )
            for c in chosen
        ]

    def check_update(self, server_round: int, result: Result) -> str | None:
        """Refuse updates whose adapter does not match the global one, or that carry no weight."""
        weight = result.payload.metrics.get("num_examples", 0)
        if not (isinstance(weight, int) and weight > 0):
            return f"num_examples must be a positive int, got {weight!r}"
        return adapter_mismatch(self.adapter, result.payload.tensors)

    def update_size(self) -> int:
        """Number of adapter values (A and B of every module)."""
        return sum(t.numel() for t in self.adapter.values())

    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        """The client's adapter minus the global one, flattened in the global adapter's order."""
        tensors = result.payload.tensors
        return torch.cat(
            [
                (tensors[n].to(torch.float64) - t.to(torch.float64)).reshape(-1)
                for n, t in self.adapter.items()
            ]
        )

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        """Add ``mean`` (in :meth:`update_vector`'s layout) to the global adapter."""
        start = 0
        updated = {}
        for name, t in self.adapter.items():
            part = mean[start : start + t.numel()].reshape(t.shape)
            updated[name] = (t.to(torch.float64) + part).to(torch.float32)
            start += t.numel()
        self.adapter = updated
        return {}

    def global_state(self) -> Payload:
        """Return the global adapter."""
        return Payload(tensors=dict(self.adapter))

    def state_dict(self) -> Payload:
        """Checkpoint: the global adapter is the whole server state."""
        return Payload(tensors=dict(self.adapter))

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`."""
        self.initialize(state)
