"""``--batch-clients``: run several virtual clients' tasks with their training steps shared.

Strategies stay as they are. Each client's half runs its task on its own thread against a
:class:`DeferredTrainer`, which keeps the client's adapter to itself and, at ``train``, hands the
call to the engine and waits. Only one thread runs at a time (strict hand-offs, so a run is as
deterministic as the sequential one): the engine starts each client until it asks to train,
trains all those asks in one :func:`~fedft.runtime.batched_training.train_together`, then lets
each client finish its task (or ask again) in turn.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from fedft.core.config import StrategyConfig
from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.trainer import LoraSpec, TrainStats
from fedft.runtime.batched_training import JobResult, TrainJob, train_together
from fedft.runtime.trainer import DEFAULT_CLIP_NORM, LocalTrainer
from fedft.strategies.options import LoRATrainingOptions

# A client's task, given the trainer to run it with.
ClientCall = Callable[[Any], Payload]


def check_batchable(config_cls: type[StrategyConfig], batch_clients: int) -> None:
    """Refuse ``--batch-clients`` above 1 for a strategy that does not train LoRA adapters."""
    if batch_clients > 1 and not issubclass(config_cls, LoRATrainingOptions):
        raise UsageError(
            "--batch-clients needs a LoRA strategy (fedavg_lora, hetlora, legend, flexlora): "
            "seed-based strategies have no per-client adapter to batch"
        )


class DeferredTrainer:
    """One client's trainer whose ``train`` runs in the engine, with other clients' steps.

    The adapter a strategy loads stays in this object (the shared model is not touched) until
    the engine trains it; ``lora_state`` then returns the trained factors.
    """

    def __init__(self, trainer: LocalTrainer, ask: Callable[[TrainJob], JobResult]):
        self.trainer = trainer
        self._ask = ask
        self._spec: LoraSpec | None = trainer.bundle.lora_spec
        self._tensors: dict[str, torch.Tensor] | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The shared model (read-only use: training goes through :meth:`train`)."""
        return self.trainer.model

    @property
    def num_examples(self) -> int:
        """Number of this client's training examples."""
        return self.trainer.num_examples

    def add_lora(self, spec: LoraSpec) -> None:
        """Train ``spec``'s layout (the model already carries adapters in the simulator)."""
        self._spec = spec

    def use_lora(self, spec: LoraSpec) -> None:
        """Train ``spec``'s layout from now on."""
        if spec != self._spec:
            self._tensors = None  # the factors loaded so far belong to the old layout
        self._spec = spec

    def load_lora_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Keep ``tensors`` as this client's adapter (checked against the layout at training)."""
        self._tensors = {name: t.detach().clone() for name, t in tensors.items()}

    def lora_state(self) -> dict[str, torch.Tensor]:
        """This client's adapter: as trained or loaded, else the model's for the layout."""
        if self._tensors is None:
            if self._spec is not None:
                self.trainer.use_lora(self._spec)
            return self.trainer.lora_state()
        return {n: t.detach().to("cpu", torch.float32, copy=True) for n, t in self._tensors.items()}

    def train(
        self,
        *,
        steps: int,
        batch_size: int,
        lr: float,
        seed: int,
        optimizer: str = "adamw",
        max_grad_norm: float | None = DEFAULT_CLIP_NORM,
        data_seed: int | None = None,
        data_offset: int = 0,
    ) -> TrainStats:
        """Hand the call to the engine, which trains it with the other clients' calls."""
        job = TrainJob(
            self.trainer,
            self._spec,
            self._tensors,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            optimizer=optimizer,
            max_grad_norm=max_grad_norm,
            data_seed=data_seed,
            data_offset=data_offset,
        )
        result = self._ask(job)
        self._tensors = result.tensors
        return result.stats

    def batches(self, *, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        """The client's collated batches, as its own trainer yields them."""
        return self.trainer.batches(batch_size=batch_size, seed=seed)

    def loss(self, batch: dict[str, torch.Tensor]) -> float:
        """The shared model's loss on ``batch`` (its active adapter, not this client's)."""
        return self.trainer.loss(batch)


class _Client(threading.Thread):
    """One client's task on its own thread, parked whenever it waits for the engine."""

    def __init__(self, call: ClientCall, trainer: LocalTrainer):
        super().__init__(daemon=True)
        self.call = call
        self.deferred = DeferredTrainer(trainer, self._ask)
        self.to_engine: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self.to_client: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run(self) -> None:
        try:
            self.to_engine.put(("done", self.call(self.deferred)))
        except BaseException as exc:  # handed to the engine thread, which raises it
            self.to_engine.put(("error", exc))

    def _ask(self, job: TrainJob) -> JobResult:
        self.to_engine.put(("train", job))
        ok, value = self.to_client.get()
        if not ok:
            raise value
        result: JobResult = value
        return result

    def resume(self, ok: bool, value: Any) -> tuple[str, Any]:
        """Answer the client's pending ask and wait until it parks again."""
        self.to_client.put((ok, value))
        return self.to_engine.get()


def run_together(calls: Sequence[ClientCall], trainers: Sequence[LocalTrainer]) -> list[Payload]:
    """Run each ``calls[i](trainer)`` with the clients' training steps batched; replies in order.

    An exception raised by any client's task (or by the shared training) is raised here once
    every thread has finished.
    """
    clients = [_Client(call, trainer) for call, trainer in zip(calls, trainers, strict=True)]
    state: list[tuple[str, Any]] = []
    for client in clients:
        client.start()
        state.append(client.to_engine.get())
    while True:
        waiting = [i for i, (kind, _) in enumerate(state) if kind == "train"]
        if not waiting:
            break
        try:
            results = train_together([state[i][1] for i in waiting])
        except Exception as exc:
            for i in waiting:
                state[i] = clients[i].resume(False, exc)
            continue
        for i, result in zip(waiting, results, strict=True):
            state[i] = clients[i].resume(True, result)
    for client in clients:
        client.join()
    for kind, value in state:
        if kind == "error":
            raise value
    return [value for _, value in state]
