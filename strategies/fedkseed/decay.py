"""FedKSeed's weight decay in the scaled frame: which tensors decay, and what a round adds.

MeZO's step is ``w <- w - lr * (g z + wd * w)`` on decayed tensors, ``w <- w - lr * g z`` on
the rest. With ``rho = 1 - lr * wd`` that is ``w <- rho * w - lr * g z``, so a decayed block is
always ``a * (w0 + sum_k C_k z_k)``: a round of ``tau`` steps from ``(a, C)`` ends at
``a' = rho^tau * a`` and ``C + (1 / a') * sum_t (-lr * rho^(tau-1-t) * g_t) e_(s_t)``. The decay
is applied at every step, skipped ones included, so ``a'`` depends on nothing the server does
not know. Clients of a round all start from the same version, so their example-weighted mean
is again of that form, with the mean of their contributions.

Block 0 is the decayed tensors, block 1 (only if there are any) the exempt ones, and the
coefficient matrix gets a final row holding ``ln a`` per block (``Geometry.scaled``). The
exempt block keeps ``a = 1`` and plain contributions ``-lr * sum g``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from fedft.kernels.seed_ops import FlatParams
from fedft.strategies.fedkseed.config import FedKSeedConfig

Span = tuple[int, int]


def decays(config: FedKSeedConfig) -> bool:
    """Whether ``config`` asks for weight decay (the scaled frame); 0 keeps the plain one."""
    return config.weight_decay > 0


def exempt(tensor: torch.Tensor) -> bool:
    """Whether a tensor is spared the decay: the 1-D ones, i.e. biases and norm scales.

    MeZO spares names containing "bias", "layer_norm" or "layernorm". On OPT (the models MeZO
    tunes) that picks exactly the 1-D tensors, but it misses Llama's final ``model.norm.weight``
    and any norm named otherwise; the shape rule needs no naming convention, and is the usual
    one elsewhere (decay matrices and embeddings, not biases and gains). LoRA factors are 2-D,
    so with ``trainable=lora`` everything decays and there is one block.
    """
    return tensor.dim() <= 1


def decay_blocks(
    params: FlatParams, named: Mapping[str, torch.Tensor]
) -> tuple[tuple[Span, ...], tuple[Span, ...]]:
    """Return the stream spans of the decayed and of the exempt tensors (adjacent ones merged)."""
    blocks: tuple[list[Span], list[Span]] = ([], [])
    for entry in params.layout:
        if not entry.numel:
            continue
        spans = blocks[exempt(named[entry.name])]
        if spans and spans[-1][1] == entry.offset:
            spans[-1] = (spans[-1][0], entry.offset + entry.numel)
        else:
            spans.append((entry.offset, entry.offset + entry.numel))
    return tuple(blocks[0]), tuple(blocks[1])


def round_log_scale(config: FedKSeedConfig) -> float:
    """``ln(rho^tau)``: what one round adds to a decayed block's log scale."""
    return config.local_steps * math.log1p(-config.lr * config.weight_decay)


def update_vector(
    config: FedKSeedConfig, indices: torch.Tensor, grads: torch.Tensor, blocks: int
) -> torch.Tensor:
    """One client's update, linear in its g: minus the g summed per seed (float64).

    With decay, step t's g counts ``rho^(tau-1-t)`` times in the decayed block (the decay of
    the later steps shrinks it); with an exempt block the plain sums follow (K, then 2K).
    """
    g = grads.to(torch.float64)
    plain = torch.zeros(config.seeds, dtype=torch.float64).index_add_(0, indices, -g)
    if not decays(config):
        return plain
    rho = 1.0 - config.lr * config.weight_decay
    later = torch.arange(len(g) - 1, -1, -1, dtype=torch.float64)
    weighted = torch.zeros(config.seeds, dtype=torch.float64)
    weighted.index_add_(0, indices, -g * rho**later)
    return weighted if blocks == 1 else torch.cat([weighted, plain])


def coefficient_change(
    config: FedKSeedConfig, vector: torch.Tensor, log_scale: float, blocks: int
) -> torch.Tensor:
    """Turn a (mean) update vector into a change of the scaled coefficients, shape (K+1, blocks).

    ``log_scale`` is the decayed block's ``ln a`` before the round. Its seed rows gain the
    contributions divided by the new scale ``a'``; its scale row gains ``ln(rho^tau)``.
    """
    seeds = config.seeds
    step = round_log_scale(config)
    change = torch.zeros(seeds + 1, blocks, dtype=torch.float64)
    vector = vector.to(torch.float64)
    change[:seeds, 0] = vector[:seeds] * (config.lr / math.exp(log_scale + step))
    change[seeds, 0] = step
    if blocks == 2:
        change[:seeds, 1] = vector[seeds:] * config.lr
    return change


def step_factors(config: FedKSeedConfig) -> list[float]:
    """The fp32 factor each local step multiplies the decayed weights by (1.0: no pass).

    Rounding ``rho`` itself to fp32 would compound: off by up to 3e-8 per step, or nothing at
    all when ``lr * wd`` is below fp32's resolution near 1 (the paper's lr is 3e-7). Each factor
    instead corrects the running product back to ``rho^(t+1)``, so the local weights track the
    exact decay to one fp32 rounding, and steps whose factor rounds to 1 skip the pass.
    """
    rho = 1.0 - config.lr * config.weight_decay
    factors: list[float] = []
    applied = 1.0
    for step in range(config.local_steps):
        factor = float(torch.tensor(rho ** (step + 1) / applied, dtype=torch.float32))
        factors.append(factor)
        applied *= factor
    return factors
