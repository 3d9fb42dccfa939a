"""Client half of ``ferret``: first-order local steps, sent as block-wise seed projections."""

from __future__ import annotations

import torch

from fedft.core.payload import Payload, config_int
from fedft.core.trainer import Trainer
from fedft.kernels.seed_ops import FlatParams
from fedft.strategies.ferret.config import FerretConfig
from fedft.strategies.ferret.projection import project_blocks, projection_vector
from fedft.strategies.options import local_train
from fedft.strategies.seedpool.client_base import SeedClient
from fedft.strategies.seedpool.trainable import (
    block_ends,
    module_order_blocks,
    select_parameters,
)
from fedft.strategies.seedpool.wire import index_dtype


class FerretClient(SeedClient[FerretConfig]):
    """Trains like FedAvg, then sends only each block's coordinates on a few shared bases.

    Shu et al., "Ferret: Federated Full-Parameter Tuning at Scale for Large Language Models"
    (ICML 2025, arXiv:2409.06277).
    """

    def prepare(self, trainer: Trainer) -> None:
        """Make exactly the selected parameters trainable (adding LoRA first if asked)."""
        super().prepare(trainer)
        chosen = select_parameters(trainer.model, self.config.trainable)
        for name, param in trainer.model.named_parameters():
            param.requires_grad_(name in chosen)

    def block_ends(self, params: FlatParams) -> list[int]:
        """Blocks of whole parameters of about ``block_size`` elements."""
        return block_ends(params, self.config.block_size)

    def block_spans(
        self, params: FlatParams, model: torch.nn.Module
    ) -> list[tuple[tuple[int, int], ...]] | None:
        """With ``block_order=module``, blocks follow ``named_parameters()`` order."""
        if self.config.block_order != "module":
            return None
        order = list(select_parameters(model, self.config.trainable))
        return module_order_blocks(params, order, self.config.block_size)

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Sync, train locally, project ``old - new`` block by block; the model is restored."""
        cfg = self.config
        synced = self.sync(task, local_state, trainer)
        if synced is None:
            return self.resync_request(trainer)
        params, geometry, version, _ = synced
        seed = config_int(task.config, "seed")
        start = params.snapshot()
        stats = local_train(
            trainer,
            local_state,
            cfg.training_config(),
            steps=cfg.local_steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=seed,
            optimizer=cfg.optimizer,
        )
        delta = start - params.snapshot()
        # Back to the global version: the model's tag stays true, whoever trains next.
        params.restore(start)
        generator = torch.Generator().manual_seed(seed)
        proj = project_blocks(
            delta,
            geometry.ends,
            geometry.seeds,
            cfg.kind,
            generator,
            spans=geometry.spans,
            exact=cfg.coefficients == "exact",
        )
        return Payload(
            tensors={
                "i": proj.index.to(index_dtype(cfg.seeds)),
                "b": proj.block.to(index_dtype(len(geometry.ends))),
                "c": proj.coeff.to(torch.float32),
            },
            metrics={
                "num_examples": trainer.num_examples,
                "version": version,
                "train_loss": stats.loss,
                "steps": stats.steps,
            },
        )

    def update_vector(self, task: Payload, reply: Payload, trainer: Trainer) -> torch.Tensor | None:
        """Minus the projections at their (seed, block) places, as the server measures them."""
        if not reply.tensors:
            return None  # a resync request
        _, geometry = self.geometry(trainer)
        t = reply.tensors
        return projection_vector(t["i"], t["b"], t["c"], len(geometry.seeds), len(geometry.ends))
