"""The neighbour graph is k-regular, symmetric, seeded by the round, and of logarithmic degree."""

from __future__ import annotations

import pytest

from fedft.privacy.secagg.graph import (
    default_neighbours,
    default_threshold,
    neighbour_graph,
    round_context,
)


def test_graph_is_k_regular_and_symmetric() -> None:
    ctx = round_context("run", 3)
    graph = neighbour_graph(ctx, list(range(50)), 8)
    for c, near in graph.items():
        assert len(near) == 8
        assert c not in near
        assert all(c in graph[p] for p in near)


def test_graph_is_fixed_by_the_round_context() -> None:
    ids = list(range(40))
    a = neighbour_graph(round_context("run", 3), ids, 6)
    assert a == neighbour_graph(round_context("run", 3), ids[::-1], 6)
    assert a != neighbour_graph(round_context("run", 4), ids, 6)
    assert a != neighbour_graph(round_context("other", 3), ids, 6)


def test_degree_is_logarithmic_and_complete_for_small_rounds() -> None:
    assert default_neighbours(100) == 14
    assert default_neighbours(1000) == 20
    assert default_neighbours(5) == 4
    graph = neighbour_graph(round_context("run", 0), [1, 5, 9], 10)
    assert graph == {1: {5, 9}, 5: {1, 9}, 9: {1, 5}}
    assert default_threshold(14) == 8


def test_bad_graphs_are_refused() -> None:
    ctx = round_context("run", 0)
    with pytest.raises(ValueError, match="even"):
        neighbour_graph(ctx, list(range(10)), 3)
    with pytest.raises(ValueError, match="distinct"):
        neighbour_graph(ctx, [1, 1, 2], 2)
    with pytest.raises(ValueError, match="negative"):
        round_context("run", -1)
