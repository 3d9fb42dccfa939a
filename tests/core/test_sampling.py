"""Tests for fedft.core.sampling: deterministic, order-independent client sampling and seeds."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from fedft.core.sampling import SEED_BITS, client_seed, sample_clients

IDS = [f"client-{i:02d}" for i in range(20)]


def sample(
    ids: list[str], *, fraction: float = 0.3, min_clients: int = 1, seed: int = 7, rnd: int = 1
) -> list[str]:
    return sample_clients(
        ids, ids, fraction=fraction, min_clients=min_clients, seed=seed, server_round=rnd
    )


def test_deterministic() -> None:
    first = sample(IDS)
    assert first == sample(IDS)
    assert first == sample(list(IDS))
    assert len(first) == 6


def test_independent_of_input_order() -> None:
    expected = sample(IDS)
    shuffled = list(IDS)
    for trial in range(5):
        random.Random(trial).shuffle(shuffled)
        assert sample(shuffled) == expected


def test_returns_the_client_objects_for_the_chosen_ids() -> None:
    objects = [{"id": i} for i in IDS]
    chosen = sample_clients(objects, IDS, fraction=0.5, min_clients=1, seed=3, server_round=2)
    assert [c["id"] for c in chosen] == sample(IDS, fraction=0.5, seed=3, rnd=2)
    assert all(any(c is o for o in objects) for c in chosen)
    # The result is sorted by id, whatever order the hash keys gave.
    assert [c["id"] for c in chosen] == sorted(c["id"] for c in chosen)


@pytest.mark.parametrize(
    ("n", "fraction", "min_clients", "expected"),
    [
        (20, 0.3, 1, 6),
        (20, 0.31, 1, 7),  # ceil, not round
        (10, 0.01, 1, 1),
        (10, 0.01, 4, 4),
        (10, 0.5, 8, 8),
        (10, 1.0, 1, 10),
        (3, 0.5, 3, 3),
        (1, 0.1, 1, 1),
        (7, 1 / 7, 1, 1),
    ],
)
def test_size_is_ceil_fraction_at_least_min_clients(
    n: int, fraction: float, min_clients: int, expected: int
) -> None:
    ids = IDS[:n]
    chosen = sample(ids, fraction=fraction, min_clients=min_clients)
    assert len(chosen) == expected
    assert len(set(chosen)) == expected
    assert set(chosen) <= set(ids)
    assert expected == min(n, max(min_clients, math.ceil(fraction * n)))


@pytest.mark.parametrize(("n", "min_clients"), [(0, 1), (0, 0), (2, 3), (9, 10)])
def test_empty_when_fewer_than_min_clients(n: int, min_clients: int) -> None:
    assert sample(IDS[:n], fraction=1.0, min_clients=min_clients) == []


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        sample_clients(IDS, IDS[:-1], fraction=0.5, min_clients=1, seed=0, server_round=1)
    for fraction in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="fraction"):
            sample(IDS, fraction=fraction)


def test_rounds_and_seeds_give_different_samples() -> None:
    by_round = {tuple(sample(IDS, rnd=r)) for r in range(1, 51)}
    assert len(by_round) > 40
    by_seed = {tuple(sample(IDS, seed=s)) for s in range(50)}
    assert len(by_seed) > 40


def test_client_seed_is_deterministic_and_varies() -> None:
    assert client_seed(1, 2, "a") == client_seed(1, 2, "a")
    seeds = [client_seed(seed, rnd, cid) for seed in (0, 1) for rnd in range(50) for cid in IDS]
    assert len(set(seeds)) == len(seeds)
    for value in seeds:
        assert 0 <= value < 2**63
    assert SEED_BITS == 63
    # Some seeds use the top allowed bit: the full 63-bit range is in use.
    assert any(value >= 2**62 for value in seeds)


def test_client_seed_known_value() -> None:
    """Pin one value: seeds must be identical on every host and Python version."""
    import hashlib

    digest = hashlib.blake2b(b"client\x1f42\x1f3\x1fedge-7", digest_size=8).digest()
    expected = int.from_bytes(digest, "little") & (2**63 - 1)
    assert client_seed(42, 3, "edge-7") == expected


def test_each_client_is_chosen_about_fraction_of_rounds() -> None:
    rounds = 2000
    counts: Counter[str] = Counter()
    for r in range(rounds):
        counts.update(sample(IDS, fraction=0.25, seed=11, rnd=r))
    assert sum(counts.values()) == rounds * 5
    for cid in IDS:
        # Expected 500 (p = 0.25); the binomial std is about 19, so these bounds are > 5 sigma.
        assert 400 < counts[cid] < 600, (cid, counts[cid])
