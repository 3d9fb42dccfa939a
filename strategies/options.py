"""Option groups several strategies share: client sampling, local first-order training, LoRA.

Each group is a frozen-dataclass base class; a strategy's config inherits the groups it uses and
extends :meth:`SamplingOptions.checks` with its own conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from fedft.core.config import ConfigError, StrategyConfig, option
from fedft.core.layout import adapter_ranks, report_layout
from fedft.core.payload import ConfigValue, Payload, config_float, config_int
from fedft.core.sampling import client_seed, sample_clients
from fedft.core.strategy import ClientInfo
from fedft.core.trainer import Trainer, TrainStats

ClientT = TypeVar("ClientT", bound=ClientInfo)

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class SamplingOptions(StrategyConfig):
    """Which clients take part in a round."""

    fraction: float = option(1.0, "fraction of available clients sampled each round, in (0, 1]")
    min_clients: int = option(1, "a round starts only with at least this many clients")

    def checks(self) -> list[tuple[bool, str]]:
        """Return (condition, message) pairs; subclasses extend the list."""
        return [
            (0.0 < self.fraction <= 1.0, "fraction must be in (0, 1]"),
            (self.min_clients >= 1, "min_clients must be >= 1"),
        ]

    def __post_init__(self) -> None:
        for ok, message in self.checks():
            if not ok:
                raise ConfigError(f"{type(self).__name__}: {message}")

    def sample(self, clients: Sequence[ClientT], *, seed: int, server_round: int) -> list[ClientT]:
        """The clients taking part in ``server_round`` (deterministic for ``seed``)."""
        return sample_clients(
            clients,
            [c.client_id for c in clients],
            fraction=self.fraction,
            min_clients=self.min_clients,
            seed=seed,
            server_round=server_round,
        )


DATA_ORDERS = ("fresh", "persistent")
DEFAULT_CLIP = 1.0  # what every first-order step clipped to before the option existed
_CURSOR = "data.cursor"  # local_state tensor: [stream seed, examples consumed so far]


@dataclass(frozen=True)
class FirstOrderOptions(SamplingOptions):
    """How the local first-order steps run: gradient clipping and the order data is visited."""

    max_grad_norm: float | None = option(
        DEFAULT_CLIP,
        "clip each step's gradient to this L2 norm; none or 0: unclipped (the papers' reference "
        "code for Ferret, FedIT and FlexLoRA does not clip); stored as 0 for the wire",
    )
    data_order: str = option(
        "fresh",
        "fresh: every task draws a new permutation of the local data; persistent: each client "
        "keeps one shuffled iterator across rounds (the reference code), so every example is "
        "seen before any repeats",
    )

    def __post_init__(self) -> None:
        # Wire configs hold no None: "unclipped" travels as 0.0 whichever way it was asked for.
        if self.max_grad_norm is None:
            object.__setattr__(self, "max_grad_norm", 0.0)
        super().__post_init__()

    def checks(self) -> list[tuple[bool, str]]:
        """The sampling checks plus the clip norm's and the data order's."""
        return [
            *super().checks(),
            (self.max_grad_norm is None or self.max_grad_norm >= 0, "max_grad_norm must be >= 0"),
            (self.data_order in DATA_ORDERS, f"data_order must be one of {', '.join(DATA_ORDERS)}"),
        ]

    def training_config(self) -> dict[str, ConfigValue]:
        """The task-config entries :func:`local_train` reads (0.0 stands for unclipped).

        Only what differs from fedft's earlier behaviour (clip at 1.0, a fresh permutation)
        travels, so default tasks keep their exact bytes and older clients read them alike.
        """
        out: dict[str, ConfigValue] = {}
        if self.max_grad_norm != DEFAULT_CLIP:
            out["max_grad_norm"] = self.max_grad_norm or 0.0
        if self.data_order == "persistent":
            out["persistent_data"] = True
        return out


def local_train(
    trainer: Trainer,
    local_state: Payload | None,
    config: dict[str, ConfigValue],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "adamw",
) -> TrainStats:
    """Train with the clip norm and data order a task's config names (see ``training_config``).

    A persistent data order keeps the client's stream seed and position in ``local_state``; the
    first task's seed starts the stream. A task without these keys (an older server) trains as
    fedft always did: clipped at 1.0, a fresh permutation per task.
    """
    clip = config_float(config, "max_grad_norm") if "max_grad_norm" in config else DEFAULT_CLIP
    cursor = None
    if config.get("persistent_data") is True and local_state is not None:
        held = local_state.tensors.get(_CURSOR)
        cursor = (seed, 0) if held is None else (int(held[0]), int(held[1]))
    stats = trainer.train(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        optimizer=optimizer,
        max_grad_norm=clip if clip > 0 else None,
        data_seed=None if cursor is None else cursor[0],
        data_offset=0 if cursor is None else cursor[1],
    )
    if cursor is not None and local_state is not None:
        position = cursor[1] + stats.examples
        local_state.tensors[_CURSOR] = torch.tensor([cursor[0], position], dtype=torch.int64)
    return stats


@dataclass(frozen=True)
class LoRATrainingOptions(FirstOrderOptions):
    """LoRA scaling and targets, and the local AdamW steps every sampled client runs."""

    alpha: int = option(16, "LoRA alpha; adapters are scaled by alpha / rank")
    dropout: float = option(0.0, "dropout on the LoRA input during local training")
    target_modules: tuple[str, ...] = option(
        ALL_LINEAR, "module names that receive adapters (comma-separated on the command line)"
    )
    local_steps: int = option(10, "AdamW steps each sampled client runs per round")
    batch_size: int = option(8, "examples per local step")
    lr: float = option(1e-3, "learning rate of local AdamW")

    def checks(self) -> list[tuple[bool, str]]:
        """The sampling checks plus those of the LoRA and training options."""
        return [
            *super().checks(),
            (self.alpha > 0, "alpha must be > 0"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (len(self.target_modules) > 0, "target_modules must not be empty"),
            (self.local_steps >= 1, "local_steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
        ]

    def task_config(
        self, *, seed: int, server_round: int, client_id: str
    ) -> dict[str, ConfigValue]:
        """The local-training part of a task's config; :func:`train_lora` reads it."""
        return {
            "round": server_round,
            "seed": client_seed(seed, server_round, client_id),
            "local_steps": self.local_steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            **self.training_config(),
        }


def train_lora(trainer: Trainer, task: Payload, local_state: Payload | None = None) -> Payload:
    """Load the task's adapter, train as its config says (see ``task_config``), reply with it.

    The reply's metrics report the adapter's layout (``fedft.core.layout``) for the host's report.
    """
    trainer.load_lora_state(task.tensors)
    config = task.config
    stats = local_train(
        trainer,
        local_state,
        config,
        steps=config_int(config, "local_steps"),
        batch_size=config_int(config, "batch_size"),
        lr=config_float(config, "lr"),
        seed=config_int(config, "seed"),
    )
    reply = Payload(
        tensors=trainer.lora_state(),
        metrics={
            "num_examples": trainer.num_examples,
            "train_loss": stats.loss,
            "steps": stats.steps,
        },
    )
    report_layout(reply.metrics, adapter_ranks(reply.tensors))
    return reply
