"""The pool of K candidate seeds every client and the server derive from one pool seed."""

from __future__ import annotations

from functools import lru_cache

import torch

from fedft.core.rng import derive_seed

# Separates the pool's seeds from every other use of derive_seed on the same pool seed.
_POOL_DOMAIN = 0x5EED_9001
_STEP_DOMAIN = 0x5EED_9002


@lru_cache(maxsize=8)
def pool_seeds(pool_seed: int, size: int) -> tuple[int, ...]:
    """Return the ``size`` candidate seeds of the pool keyed by ``pool_seed``."""
    if size < 1:
        raise ValueError(f"a seed pool needs at least one seed, got {size}")
    return tuple(derive_seed(_POOL_DOMAIN, pool_seed, k) for k in range(size))


def step_indices(task_seed: int, steps: int, size: int) -> torch.Tensor:
    """Return the pool index of each local step, derived from the task seed by hashing only.

    Both halves compute this (integer arithmetic, identical on every platform), so a uniform
    FedKSeed update need not carry its seed indices. The modulo bias is below size / 2^64.
    """
    return torch.tensor(
        [derive_seed(_STEP_DOMAIN, task_seed, t) % size for t in range(steps)], dtype=torch.int64
    )
