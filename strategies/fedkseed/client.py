"""Client half of ``fedkseed``: catch up from seed deltas, then zeroth-order steps on seeds."""

from __future__ import annotations

import math
from typing import Any

import torch

from fedft.core.payload import Payload, config_int
from fedft.core.trainer import Trainer
from fedft.kernels.seed_ops import FlatParams, direction, perturb_
from fedft.strategies.fedkseed.config import FedKSeedConfig
from fedft.strategies.seedpool.client_base import SeedClient
from fedft.strategies.seedpool.kept_weights import kept_weights
from fedft.strategies.seedpool.pool import step_indices
from fedft.strategies.seedpool.replay import (
    Geometry,
    apply_coefficients_,
    set_held,
)

# Keep each step's z in memory when the trainable set is at most this many elements (64 MiB):
# it saves two of the three regenerations per step; larger sets regenerate to stay lean.
CACHE_LIMIT = 1 << 24


def caches_z(params: FlatParams) -> bool:
    """Whether a step keeps z rather than regenerating it: small sets on the CPU only.

    On a GPU the Triton kernel regenerates z inside the update, faster than a cache (held on
    the CPU) is read and copied: the cached step measured 8.2x two forwards on an H200, the
    regenerated one 0.99x (docs/results.md).
    """
    return bool(params.flat) and params.total <= CACHE_LIMIT and params.flat[0].device.type == "cpu"


class FedKSeedClient(SeedClient[FedKSeedConfig]):
    """Runs MeZO-style two-point steps whose directions come from the shared seed pool.

    Qin et al., "Federated Full-Parameter Tuning of Billion-Sized Language Models with
    Communication Cost under 18 Kilobytes" (arXiv:2312.06353).
    """

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Sync to the task's version, run the local steps, return each step's scalar g."""
        synced = self.sync(task, local_state, trainer)
        if synced is None:
            return self.resync_request(trainer)
        params, geometry, version, target = synced
        indices = self._sample(task, geometry)
        with kept_weights(params) as restore:
            grads, kept, loss_sum = self._local_steps(task, trainer, params, geometry, indices)
            local = torch.zeros(geometry.shape, dtype=torch.float64)
            local[:, 0].index_add_(0, indices, grads.to(torch.float64) * -self.config.lr)
            # Three in-place passes per step leave fp32 rounding drift (~1 ulp each) in the
            # weights. Rebuild the local model from the synced one in one replay, so that it is
            # exactly what the coefficients say: the server's average then matches it to an ulp.
            restore()
        apply_coefficients_(params, geometry, local)
        set_held(trainer.model, geometry, target + local)
        return Payload(
            tensors=self._update_tensors(indices, grads),
            metrics={
                "num_examples": trainer.num_examples,
                "version": version,
                "steps": kept,
                "train_loss": loss_sum / max(kept, 1),
            },
        )

    def _sample(self, task: Payload, geometry: Geometry) -> torch.Tensor:
        """Each step's seed index: uniform, hashed from the task seed (the server does the same)."""
        seed = config_int(task.config, "seed")
        return step_indices(seed, self.config.local_steps, len(geometry.seeds))

    def _update_tensors(
        self, indices: torch.Tensor, grads: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """What goes up: the g of every step (0 for a skipped one); indices are implied."""
        return {"g": grads}

    def _local_steps(
        self,
        task: Payload,
        trainer: Trainer,
        params: FlatParams,
        geometry: Geometry,
        indices: torch.Tensor,
    ) -> tuple[torch.Tensor, int, float]:
        """Run the two-point steps; returns every step's g (fp32), the steps kept, the loss sum."""
        cfg = self.config
        batches = trainer.batches(batch_size=cfg.batch_size, seed=config_int(task.config, "seed"))
        grads = torch.zeros(len(indices), dtype=torch.float32)
        kept = 0
        loss_sum = 0.0
        for step, index in enumerate(indices.tolist()):
            seed = geometry.seeds[index]
            batch: Any = next(batches)
            z = direction(params, seed, cfg.kind) if caches_z(params) else None
            perturb_(params, seed, cfg.eps, cfg.kind, cached=z)
            loss_plus = trainer.loss(batch)
            perturb_(params, seed, -2 * cfg.eps, cfg.kind, cached=z)
            loss_minus = trainer.loss(batch)
            diff = loss_plus - loss_minus
            if not math.isfinite(diff) or (cfg.grad_clip and abs(diff) > cfg.grad_clip):
                perturb_(params, seed, cfg.eps, cfg.kind, cached=z)  # restore, skip the step
                continue
            # g goes on the wire as fp32; the local step uses the same value the server will.
            g = float(torch.tensor(diff / (2 * cfg.eps), dtype=torch.float32))
            # Restore (+eps) and step (-lr*g) in one pass over the weights.
            perturb_(params, seed, cfg.eps - cfg.lr * g, cfg.kind, cached=z)
            grads[step] = g
            kept += 1
            loss_sum += 0.5 * (loss_plus + loss_minus)
        return grads, kept, loss_sum
