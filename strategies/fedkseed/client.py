"""Client half of ``fedkseed``: catch up from seed deltas, then zeroth-order steps on seeds."""

from __future__ import annotations

import math
from typing import Any

import torch

from fedft.core.payload import Payload, config_int
from fedft.core.trainer import Trainer
from fedft.kernels.seed_ops import FlatParams, apply_seeds_, direction, perturb_
from fedft.strategies.fedkseed.config import FedKSeedConfig
from fedft.strategies.fedkseed.decay import (
    coefficient_change,
    decay_blocks,
    decays,
    step_factors,
    update_vector,
)
from fedft.strategies.seedpool.client_base import SeedClient
from fedft.strategies.seedpool.kept_weights import kept_weights
from fedft.strategies.seedpool.pool import step_indices
from fedft.strategies.seedpool.replay import Geometry, replay_, scale_spans_, set_held
from fedft.strategies.seedpool.trainable import select_parameters

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

    def scaled(self) -> bool:
        """With weight decay the coefficients carry the decayed block's log scale."""
        return decays(self.config)

    def block_spans(
        self, params: FlatParams, model: torch.nn.Module
    ) -> list[tuple[tuple[int, int], ...]] | None:
        """With weight decay: block 0 the decayed tensors, block 1 the exempt (1-D) ones.

        A set without exempt tensors (e.g. LoRA factors) keeps one block.
        """
        if not decays(self.config):
            return None
        decayed, spared = decay_blocks(params, select_parameters(model, self.config.trainable))
        return [decayed, spared] if spared else None

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Sync to the task's version, run the local steps, return each step's scalar g."""
        synced = self.sync(task, local_state, trainer)
        if synced is None:
            return self.resync_request(trainer)
        params, geometry, version, target = synced
        indices = self._sample(task, geometry)
        with kept_weights(params) as restore:
            grads, kept, loss_sum = self._local_steps(task, trainer, params, geometry, indices)
            local = self._local_coefficients(geometry, target, indices, grads)
            # Three in-place passes per step leave fp32 rounding drift (~1 ulp each) in the
            # weights. Rebuild the local model from the synced one in one replay, so that it is
            # exactly what the coefficients say: the server's average then matches it to an ulp.
            restore()
        replay_(params, geometry, local, held=target)
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

    def update_vector(self, task: Payload, reply: Payload, trainer: Trainer) -> torch.Tensor | None:
        """Minus the reply's g summed per seed, as the server measures it (None: a resync)."""
        if not reply.tensors:
            return None
        _, geometry = self.geometry(trainer)
        sent = reply.tensors.get("i")
        indices = sent.to(torch.int64) if sent is not None else self._sample(task, geometry)
        return update_vector(self.config, indices, reply.tensors["g"], len(geometry.ends))

    def _local_coefficients(
        self, geometry: Geometry, target: torch.Tensor, indices: torch.Tensor, grads: torch.Tensor
    ) -> torch.Tensor:
        """The steps' change as coefficients: what the server would add for this client alone."""
        cfg = self.config
        if not geometry.scaled:
            local = torch.zeros(geometry.shape, dtype=torch.float64)
            local[:, 0].index_add_(0, indices, grads.to(torch.float64) * -cfg.lr)
            return local
        blocks = geometry.shape[1]
        vector = update_vector(cfg, indices, grads, blocks)
        return coefficient_change(cfg, vector, float(target[len(geometry.seeds), 0]), blocks)

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
        if geometry.scaled:
            factors = step_factors(cfg)
            decayed = geometry.block_spans(0)
            spared = geometry.block_spans(1) if geometry.shape[1] > 1 else ()
        else:
            factors, decayed, spared = [1.0] * len(indices), (), ()
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
                # Skip the step (g = 0) but still decay: the server counts every step's decay.
                self._restore_and_step(
                    params, seed, 0.0, factor=factors[step], z=z, decayed=decayed, spared=spared
                )
                continue
            # g goes on the wire as fp32; the local step uses the same value the server will.
            g = float(torch.tensor(diff / (2 * cfg.eps), dtype=torch.float32))
            self._restore_and_step(
                params, seed, g, factor=factors[step], z=z, decayed=decayed, spared=spared
            )
            grads[step] = g
            kept += 1
            loss_sum += 0.5 * (loss_plus + loss_minus)
        return grads, kept, loss_sum

    def _restore_and_step(
        self,
        params: FlatParams,
        seed: int,
        g: float,
        *,
        factor: float,
        z: torch.Tensor | None,
        decayed: tuple[tuple[int, int], ...],
        spared: tuple[tuple[int, int], ...],
    ) -> None:
        """Undo the -eps perturbation and step: ``factor * w - lr * g * z`` on decayed tensors.

        MeZO's decayed step, with g taken at w. With factor 1 (no decay, or none due at this
        step) it is one pass, as without decay. Otherwise one pass leaves ``w - lr*g/factor * z``
        everywhere and the decayed spans are scaled; the exempt spans (small: biases, norms)
        then get back the part of the step the division added.
        """
        cfg = self.config
        perturb_(params, seed, cfg.eps - cfg.lr * g / factor, cfg.kind, cached=z)
        if factor == 1.0:
            return
        scale_spans_(params, decayed, factor)
        fix = cfg.lr * g / factor - cfg.lr * g
        if fix:
            for start, end in spared:
                apply_seeds_(params, [seed], [fix], cfg.kind, start=start, end=end)
