"""Client-side DP: clip and noise what a client sends, before it leaves the device.

The modifier wraps any client half and works on the reply's payload, so it needs nothing from
the strategy. The update is the reply's floating-point tensors, each taken relative to the
task's tensor of the same name and shape when there is one (a LoRA adapter comes back whole;
FedKSeed's step scalars and Ferret's projections are updates already). Integer tensors (seed
and block indices) are public bookkeeping and pass unchanged. The whole update is clipped to
L2 norm C and gets N(0, (z C)^2) per value: each reply is then a Gaussian mechanism with noise
multiplier z on this client's data, whatever the server does. Metrics (example count, loss)
are not privatised.

Each reply that carried an update is one release, recorded in the client's own ledger (the
daemon's state folder; a simulation's ``clients/<id>/``), which ``fedft audit --run`` reads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from fedft.core.payload import Payload
from fedft.core.strategy import ClientStrategy
from fedft.core.trainer import Trainer
from fedft.privacy.config import LocalDPConfig
from fedft.privacy.ledger import (
    GAUSSIAN,
    LEDGER_FILE,
    REPLACE_ONE,
    LedgerEntry,
    append_jsonl,
    read_jsonl,
)
from fedft.privacy.mechanisms import SecureGaussian

# Where a simulation keeps each client's own records, one folder per client id.
CLIENTS_DIR = "clients"


def _update_names(task: Payload, reply: Payload) -> list[str]:
    return [name for name, t in reply.tensors.items() if t.is_floating_point()]


def _base(task: Payload, name: str, tensor: torch.Tensor) -> torch.Tensor | None:
    base = task.tensors.get(name)
    if base is not None and base.shape == tensor.shape and base.is_floating_point():
        return base
    return None


def privatize(
    task: Payload, reply: Payload, config: LocalDPConfig, noise: SecureGaussian
) -> Payload:
    """Return ``reply`` with its update clipped to ``config.clip`` and Gaussian noise added."""
    names = _update_names(task, reply)
    if not names:
        return reply  # e.g. a resync request: nothing derived from local data
    parts = []
    for name in names:
        tensor = reply.tensors[name].to(torch.float64)
        base = _base(task, name, tensor)
        parts.append((tensor - base.to(torch.float64) if base is not None else tensor).reshape(-1))
    vector = torch.cat(parts)
    norm = float(torch.linalg.vector_norm(vector))
    if norm > config.clip:
        vector = vector * (config.clip / norm)
    vector = vector + noise.normal(vector.numel(), config.noise_multiplier * config.clip)
    tensors = dict(reply.tensors)
    start = 0
    for name in names:
        original = reply.tensors[name]
        piece = vector[start : start + original.numel()].reshape(original.shape)
        start += original.numel()
        base = _base(task, name, original)
        if base is not None:
            piece = piece + base.to(torch.float64)
        tensors[name] = piece.to(original.dtype)
    return Payload(tensors=tensors, config=dict(reply.config), metrics=dict(reply.metrics))


def release_entry(config: LocalDPConfig, round_number: int) -> LedgerEntry:
    """The ledger entry of one privatized reply: a Gaussian mechanism on this client's data.

    No sampling amplification (the client cannot check whom the server sampled) and replace-one
    adjacency: any two clipped updates of this client lie within 2C of each other.
    """
    return LedgerEntry(
        round=round_number,
        mechanism=GAUSSIAN,
        noise_multiplier=config.noise_multiplier,
        clip_norm=config.clip,
        sampling_rate=1.0,
        participants=1,
        adjacency=REPLACE_ONE,
        recorded_at=time.time(),
    )


def worst_client(folders: Iterable[Path], delta: float = 1e-5) -> dict[str, float | int | None]:
    """Epsilon of the client that released most often, over the client ledgers in ``folders``.

    Every release of a run costs the same, so the client with the most releases is the worst
    off. Returns ``{}`` when no folder holds a ledger.
    """
    from fedft.privacy.accounting import epsilon  # dp-accounting loads only when needed

    ledgers = [read_jsonl(f / LEDGER_FILE) for f in folders if (f / LEDGER_FILE).is_file()]
    if not ledgers:
        return {}
    worst = max(ledgers, key=len)
    return {
        "local_dp_epsilon": epsilon(worst, delta),
        "local_dp_delta": delta,
        "local_dp_releases": len(worst),
    }


class LocalDPClient(ClientStrategy[Any]):
    """Any client half, with every reply clipped and noised by :func:`privatize`."""

    def __init__(
        self, inner: ClientStrategy[Any], config: LocalDPConfig, noise: SecureGaussian | None = None
    ):
        super().__init__(inner.config)
        self.inner = inner
        self.local = config
        self.noise = noise or SecureGaussian()
        self.released = False  # whether the last reply carried an update (and so spent privacy)

    def prepare(self, trainer: Trainer) -> None:
        """As the wrapped client half."""
        self.inner.prepare(trainer)

    def initial_state(self, trainer: Trainer) -> Payload:
        """As the wrapped client half (no local data is involved)."""
        return self.inner.initial_state(trainer)

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Run the wrapped client half, then privatize its reply."""
        reply = self.inner.run(task, local_state, trainer)
        self.released = bool(_update_names(task, reply))
        return privatize(task, reply, self.local, self.noise)

    def last_release(self, round_number: int) -> LedgerEntry | None:
        """The ledger entry of the last reply, or None if it carried nothing from local data."""
        return release_entry(self.local, round_number) if self.released else None

    def record_release(self, folder: Path, round_number: int) -> None:
        """Append the last reply's release to ``folder``'s ledger, if it carried an update."""
        entry = self.last_release(round_number)
        if entry is not None:
            append_jsonl(folder / LEDGER_FILE, entry)

    def load_global(self, state: Payload, trainer: Trainer) -> None:
        """As the wrapped client half."""
        self.inner.load_global(state, trainer)

    def update_vector(self, task: Payload, reply: Payload, trainer: Trainer) -> torch.Tensor | None:
        """As the wrapped client half, on the privatized reply."""
        return self.inner.update_vector(task, reply, trainer)

    def computes_vectors(self) -> bool:
        """As the wrapped client half."""
        return self.inner.computes_vectors()
