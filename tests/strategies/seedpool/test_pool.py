"""Tests for the seed pool every client and the server derive from one pool seed."""

from __future__ import annotations

import pytest

from fedft.core.rng import derive_seed
from fedft.strategies.seedpool.pool import pool_seeds

# Wire contract: clients and the server (possibly different releases) must derive the same pool,
# so these values may never change. Computed once from pool_seeds(42, 4).
GOLDEN_42 = (0xC5E03D10BBFA90A5, 0xAE810570C0B00D2D)


def test_first_seeds_of_pool_42_are_pinned() -> None:
    assert pool_seeds(42, 4)[:2] == GOLDEN_42


def test_pool_is_deterministic_and_a_prefix_of_larger_pools() -> None:
    pool = pool_seeds(7, 64)
    assert pool == pool_seeds(7, 64)
    assert pool_seeds(7, 5) == pool[:5]
    assert pool_seeds.__wrapped__(7, 64) == pool  # the cache does not change the values


def test_pool_seeds_are_distinct_unsigned_64_bit_ints() -> None:
    pool = pool_seeds(123, 1024)
    assert len(pool) == 1024
    assert len(set(pool)) == 1024
    assert all(isinstance(s, int) and 0 <= s < 2**64 for s in pool)


def test_different_pool_seeds_give_disjoint_pools() -> None:
    a, b = pool_seeds(0, 256), pool_seeds(1, 256)
    assert a != b
    assert not set(a) & set(b)
    assert pool_seeds(2**64 - 1, 3) != pool_seeds(0, 3)


def test_pool_is_domain_separated_from_plain_derived_seeds() -> None:
    # The pool of run seed s must not reuse the seeds derive_seed(s, k) gives other components.
    pool = set(pool_seeds(5, 32))
    assert not pool & {derive_seed(5, k) for k in range(32)}


@pytest.mark.parametrize("size", [0, -1])
def test_pool_size_below_one_raises(size: int) -> None:
    with pytest.raises(ValueError, match="at least one"):
        pool_seeds(42, size)


def test_pool_seed_outside_64_bits_raises() -> None:
    with pytest.raises(ValueError, match=r"2\*\*64"):
        pool_seeds(2**64, 2)
    with pytest.raises(ValueError, match=r"2\*\*64"):
        pool_seeds(-1, 2)
