"""Tests for fedft.simulation.partition: iid, category and Dirichlet splits, and the test split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedft.core.errors import UsageError
from fedft.runtime.data import Example
from fedft.simulation.partition import parse_partition, partition, train_test_split

SPECS = ["iid", "category", "dirichlet:0.5", "dirichlet:100"]


def check_cover(parts: list[list[int]], n: int, clients: int) -> None:
    assert len(parts) == clients
    assert all(parts), [len(p) for p in parts]
    flat = [i for part in parts for i in part]
    assert sorted(flat) == list(range(n))  # disjoint and covering: each index exactly once
    for part in parts:
        assert part == sorted(part)
        assert all(isinstance(i, int) for i in part)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("clients", [1, 2, 5, 10, 21])
def test_parts_are_disjoint_covering_and_non_empty(
    chatterbot_examples: list[Example], spec: str, clients: int
) -> None:
    parts = partition(chatterbot_examples, clients, spec, seed=0)
    check_cover(parts, len(chatterbot_examples), clients)


@pytest.mark.parametrize("spec", SPECS)
def test_deterministic_for_a_seed(chatterbot_examples: list[Example], spec: str) -> None:
    assert partition(chatterbot_examples, 7, spec, seed=3) == partition(
        chatterbot_examples, 7, spec, seed=3
    )


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "dirichlet:100"])
def test_another_seed_gives_another_split(chatterbot_examples: list[Example], spec: str) -> None:
    assert partition(chatterbot_examples, 7, spec, seed=3) != partition(
        chatterbot_examples, 7, spec, seed=4
    )


def test_category_split_ignores_the_seed(chatterbot_examples: list[Example]) -> None:
    assert partition(chatterbot_examples, 7, "category", seed=3) == partition(
        chatterbot_examples, 7, "category", seed=4
    )


@pytest.mark.parametrize("clients", [1, 3, 8, 10, 50])
def test_iid_sizes_differ_by_at_most_one(chatterbot_examples: list[Example], clients: int) -> None:
    sizes = [len(p) for p in partition(chatterbot_examples, clients, "iid", seed=1)]
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == len(chatterbot_examples)


@pytest.mark.parametrize("clients", [2, 5, 21])
def test_category_puts_each_category_in_one_client(
    chatterbot_examples: list[Example], clients: int
) -> None:
    parts = partition(chatterbot_examples, clients, "category", seed=0)
    owner: dict[str, set[int]] = {}
    for c, part in enumerate(parts):
        for i in part:
            owner.setdefault(chatterbot_examples[i].category, set()).add(c)
    assert len(owner) == 21
    assert all(len(clients_of) == 1 for clients_of in owner.values())
    if clients == 21:
        # One category each.
        assert sorted(len({chatterbot_examples[i].category for i in p}) for p in parts) == [1] * 21


def skew(examples: list[Example], parts: list[list[int]]) -> float:
    """Mean total-variation distance between each client's category mix and the global mix."""
    cats = sorted({ex.category for ex in examples})
    total = Counter(ex.category for ex in examples)
    global_mix = np.array([total[c] / len(examples) for c in cats])
    distances = []
    for part in parts:
        counts = Counter(examples[i].category for i in part)
        mix = np.array([counts[c] / len(part) for c in cats])
        distances.append(0.5 * np.abs(mix - global_mix).sum())
    return float(np.mean(distances))


def test_dirichlet_alpha_controls_skew(chatterbot_examples: list[Example]) -> None:
    for seed in range(3):
        skewed = skew(
            chatterbot_examples, partition(chatterbot_examples, 8, "dirichlet:0.5", seed=seed)
        )
        uniform = skew(
            chatterbot_examples, partition(chatterbot_examples, 8, "dirichlet:100", seed=seed)
        )
        iid = skew(chatterbot_examples, partition(chatterbot_examples, 8, "iid", seed=seed))
        assert uniform < skewed / 2, (uniform, skewed)
        assert skewed > 0.3
        assert uniform < 0.15
        assert iid < 0.15


def test_more_clients_than_categories_is_a_usage_error(
    chatterbot_examples: list[Example],
) -> None:
    with pytest.raises(UsageError, match="without examples") as info:
        partition(chatterbot_examples, 30, "category", seed=0)
    assert "21 categories" in str(info.value)
    assert "30 clients" in str(info.value)


def test_more_clients_than_examples_is_a_usage_error() -> None:
    examples = [Example(f"q{i}", f"a{i}", "x") for i in range(3)]
    for spec in ("iid", "dirichlet:1"):
        with pytest.raises(UsageError, match="without examples"):
            partition(examples, 4, spec, seed=0)


@pytest.mark.parametrize("clients", [0, -3])
def test_no_clients_is_a_usage_error(chatterbot_examples: list[Example], clients: int) -> None:
    with pytest.raises(UsageError, match="--clients must be >= 1"):
        partition(chatterbot_examples, clients, "iid", seed=0)


def test_unlabelled_data_is_one_category() -> None:
    examples = [Example(f"q{i}", f"a{i}") for i in range(40)]
    parts = partition(examples, 4, "dirichlet:100", seed=0)
    check_cover(parts, 40, 4)
    assert partition(examples, 1, "category", seed=0) == [list(range(40))]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("iid", ("iid", 0.0)),
        ("category", ("category", 0.0)),
        ("dirichlet:0.5", ("dirichlet", 0.5)),
        ("dirichlet:100", ("dirichlet", 100.0)),
        ("dirichlet:1e-2", ("dirichlet", 0.01)),
    ],
)
def test_parse_partition(spec: str, expected: tuple[str, float]) -> None:
    assert parse_partition(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dirichlet:x", "ALPHA must be a number"),
        ("dirichlet:", "ALPHA must be a number"),
        ("dirichlet", "ALPHA must be a number"),
        ("dirichlet:-1", "ALPHA must be a finite number"),
        ("dirichlet:0", "ALPHA must be a finite number"),
        ("dirichlet:nan", "ALPHA must be a finite number"),
        ("dirichlet:inf", "ALPHA must be a finite number"),
        ("dirichlet:1e-300", "ALPHA must be a finite number"),
        ("foo", "unknown partition 'foo'"),
        ("iid:3", "unknown partition"),
        ("category:x", "unknown partition"),
        ("", "unknown partition"),
        ("IID", "unknown partition"),
    ],
)
def test_parse_partition_rejects(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_partition(spec)


@pytest.mark.parametrize(("n", "fraction"), [(2377, 0.1), (100, 0.25), (10, 0.5), (3, 0.01)])
def test_train_test_split(n: int, fraction: float) -> None:
    train, test = train_test_split(n, test_fraction=fraction, seed=0)
    assert sorted(train + test) == list(range(n))
    assert not set(train) & set(test)
    assert len(test) == max(1, round(n * fraction))
    assert train == sorted(train)
    assert train_test_split(n, test_fraction=fraction, seed=0) == (train, test)


def test_train_test_split_keeps_the_test_list_shuffled() -> None:
    _, test = train_test_split(1000, test_fraction=0.2, seed=0)
    assert test != sorted(test)
    _, other = train_test_split(1000, test_fraction=0.2, seed=1)
    assert set(test) != set(other)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_test_split_rejects_bad_fractions(fraction: float) -> None:
    with pytest.raises(UsageError, match="--test-fraction must be in"):
        train_test_split(100, test_fraction=fraction, seed=0)


def test_train_test_split_rejects_a_tiny_dataset() -> None:
    with pytest.raises(UsageError, match="too small"):
        train_test_split(1, test_fraction=0.5, seed=0)
