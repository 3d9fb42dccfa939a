"""What the seed-based client halves share: LoRA setup, geometry, sync, global model."""

from __future__ import annotations

import itertools
from typing import TypeVar

import torch

from fedft.core.payload import Payload
from fedft.core.strategy import ClientStrategy
from fedft.core.trainer import Trainer
from fedft.kernels.seed_ops import FlatParams
from fedft.strategies.seedpool.config import SeedPoolConfig
from fedft.strategies.seedpool.pool import pool_seeds
from fedft.strategies.seedpool.replay import Geometry, geometry_of, move_model, receive
from fedft.strategies.seedpool.trainable import flat_trainable

SeedConfigT = TypeVar("SeedConfigT", bound=SeedPoolConfig)


class SeedClient(ClientStrategy[SeedConfigT]):
    """Client half of a seed-based strategy; subclasses implement ``run``."""

    def prepare(self, trainer: Trainer) -> None:
        """Add LoRA adapters when only they are tuned."""
        spec = self.config.lora_spec()
        if spec is not None:
            trainer.add_lora(spec)

    def block_ends(self, params: FlatParams) -> list[int]:
        """Where the parameter stream's blocks end (one block by default)."""
        return [params.total]

    def block_spans(
        self, params: FlatParams, model: torch.nn.Module
    ) -> list[tuple[tuple[int, int], ...]] | None:
        """Blocks that are not contiguous in the stream, or None for :meth:`block_ends`."""
        return None

    def scaled(self) -> bool:
        """Whether coefficients carry a row of log block scales (``Geometry.scaled``)."""
        return False

    def geometry(self, trainer: Trainer) -> tuple[FlatParams, Geometry]:
        """Return the tuned parameters and the geometry coefficients refer to."""
        params = flat_trainable(trainer.model, self.config.trainable)
        seeds = pool_seeds(self.config.pool_seed, self.config.seeds)
        kind, scaled = self.config.kind, self.scaled()
        spans = self.block_spans(params, trainer.model)
        if spans is None:
            ends = self.block_ends(params)
            return params, geometry_of(seeds, kind, params, ends, scaled=scaled)
        sizes = itertools.accumulate(sum(e - s for s, e in block) for block in spans)
        return params, geometry_of(seeds, kind, params, list(sizes), spans, scaled=scaled)

    def initial_state(self, trainer: Trainer) -> Payload:
        """Describe the parameter blocks, so the server can size its coefficients."""
        params, geometry = self.geometry(trainer)
        return Payload(
            tensors={"ends": torch.tensor(geometry.ends, dtype=torch.int64)},
            config={"numel": params.total},
        )

    def resync_request(self, trainer: Trainer) -> Payload:
        """The answer of a client whose persisted versions are gone: send me everything."""
        return Payload(metrics={"num_examples": trainer.num_examples, "version": 0})

    def sync(
        self, task: Payload, local_state: Payload, trainer: Trainer
    ) -> tuple[FlatParams, Geometry, int, torch.Tensor] | None:
        """Bring the model to the task's version: ``(params, geometry, version, coeffs)``.

        Returns None when this client no longer holds the version the task builds on (e.g. a
        wiped state folder); the caller then answers with :meth:`resync_request`.
        """
        params, geometry = self.geometry(trainer)
        try:
            version, target = receive(task, local_state, geometry)
        except LookupError:
            return None
        move_model(trainer.model, params, geometry, target)
        return params, geometry, version, target

    def load_global(self, state: Payload, trainer: Trainer) -> None:
        """Move the model to the global coefficients in ``state``."""
        params, geometry = self.geometry(trainer)
        coeffs = state.tensors["coeffs"].to(torch.float64).reshape(geometry.shape)
        move_model(trainer.model, params, geometry, coeffs)
