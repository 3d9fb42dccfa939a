"""Server half of ``fedavg_lora``: example-weighted mean of adapters, streamed in one pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fedft.core import (
    ClientInfo,
    LinearUpdates,
    MetricValue,
    Payload,
    Result,
    Task,
    config_int,
)
from fedft.strategies.fedavg_lora.config import FedAvgLoRAConfig

_HELD = "held."  # checkpoint entries of older versions' adapters: held.VERSION.NAME


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


def adapter_delta(
    tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The adapter ``tensors`` minus ``base``, flat in float64, in ``base``'s order."""
    return torch.cat(
        [(tensors[n].to(torch.float64) - b.to(torch.float64)).reshape(-1) for n, b in base.items()]
    )


class FedAvgLoRAServer(LinearUpdates[FedAvgLoRAConfig]):
    """FedAvg over LoRA adapters, weighted by each client's number of examples.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data"
    (arXiv:1602.05629), applied to adapters as in FedIT (arXiv:2305.05644). Averaging A and B
    separately is not averaging B·A; the heterogeneous-rank strategies aggregate exactly.
    The round is :class:`LinearUpdates`' default: the global adapter plus the example-weighted
    mean of the clients' adapter deltas, summed in float64.

    A delta is measured against the adapter the client's task carried. In a synchronous round
    that is the current one; under ``--mode async`` (:meth:`keep_versions`) an update may
    arrive after newer versions, so the adapters of the last few versions are kept, and each
    task's ``server_round`` is mapped to the version it was built from.
    """

    def __init__(self, config: FedAvgLoRAConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.adapter: dict[str, torch.Tensor] = {}
        self.version = 0  # the server_round of the last apply_update (0: initial adapter)
        self.kept = 0  # older versions kept besides the current one
        self.held: dict[int, dict[str, torch.Tensor]] = {}  # version -> its adapter
        self.issued: dict[int, int] = {}  # a task's server_round -> version it carried

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
        if chosen:
            self.issued[server_round] = self.version
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
        base = self._base(server_round)
        if base is None:
            version = self.issued[server_round]
            return f"the task carried version {version}, which is no longer kept"
        return adapter_mismatch(base, result.payload.tensors)

    def _base(self, server_round: int) -> dict[str, torch.Tensor] | None:
        """The adapter the task of ``server_round`` carried (None if no longer kept)."""
        version = self.issued.get(server_round, self.version)
        return self.adapter if version == self.version else self.held.get(version)

    def keep_versions(self, count: int) -> None:
        """Keep the adapters of the last ``count`` versions, for stale asynchronous updates."""
        self.kept = max(count, 0)

    def update_size(self) -> int:
        """Number of adapter values (A and B of every module)."""
        return sum(t.numel() for t in self.adapter.values())

    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        """The client's adapter minus the one its task carried, in the global adapter's order."""
        tensors = result.payload.tensors
        base = self._base(server_round)
        if base is None:
            raise ValueError(f"round {server_round}: its version is no longer kept")
        # The base holds the same names in the same order as the global adapter.
        return adapter_delta(tensors, base)

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        """Add ``mean`` (in :meth:`update_vector`'s layout) to the global adapter."""
        start = 0
        updated = {}
        for name, t in self.adapter.items():
            part = mean[start : start + t.numel()].reshape(t.shape)
            updated[name] = (t.to(torch.float64) + part).to(torch.float32)
            start += t.numel()
        if self.kept:
            self.held[self.version] = self.adapter
        self.adapter = updated
        self.version = server_round
        newest = sorted(self.held)[-self.kept :] if self.kept else []
        self.held = {v: self.held[v] for v in newest}
        live = {self.version, *self.held}
        self.issued = {r: v for r, v in self.issued.items() if v in live}
        return {}

    def global_state(self) -> Payload:
        """Return the global adapter."""
        return Payload(tensors=dict(self.adapter))

    def state_dict(self) -> Payload:
        """Checkpoint: the global adapter, and the versions and tasks kept for stale updates."""
        tensors = dict(self.adapter)
        for version, adapter in self.held.items():
            tensors.update({f"{_HELD}{version}.{n}": t for n, t in adapter.items()})
        rounds = sorted(self.issued)
        return Payload(
            tensors=tensors,
            config={
                "version": self.version,
                "issued_rounds": rounds,
                "issued_versions": [self.issued[r] for r in rounds],
            },
        )

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict` (a checkpoint of only the adapter works too)."""
        adapter = {n: t for n, t in state.tensors.items() if not n.startswith(_HELD)}
        self.initialize(Payload(tensors=adapter))
        self.version = config_int(state.config, "version") if "version" in state.config else 0
        self.held = {}
        for name, t in state.tensors.items():
            if name.startswith(_HELD):
                version, _, tensor_name = name.removeprefix(_HELD).partition(".")
                self.held.setdefault(int(version), {})[tensor_name] = t.to(torch.float32)
        rounds = state.config.get("issued_rounds", [])
        versions = state.config.get("issued_versions", [])
        if isinstance(rounds, list) and isinstance(versions, list):
            self.issued = {
                int(r): int(v)
                for r, v in zip(rounds, versions, strict=True)
                if isinstance(r, int) and isinstance(v, int)
            }
