"""The public parameters of one secure aggregation round, validated once and shared by all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .encoding import Encoding
from .graph import default_neighbours, default_threshold, neighbour_graph


@dataclass(frozen=True)
class RoundConfig:
    """Everything every party of a round must agree on; the graph is derived, not chosen.

    ``clients`` are the round's participant ids (uint32), ``length`` the update vector's length,
    ``neighbours`` the graph degree k (default 2 log2 n, even) and ``threshold`` t the shares
    needed to rebuild a secret (default k/2 + 1; t <= k/2 is refused because it would let a
    server collect both kinds of shares of one client from two disjoint groups).
    """

    context: bytes
    clients: tuple[int, ...]
    length: int
    encoding: Encoding = field(default_factory=Encoding)
    neighbours: int = 0
    threshold: int = 0
    graph: Mapping[int, frozenset[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.context) != 32:
            raise ValueError("context must be the 32 bytes of graph.round_context")
        if self.length < 1:
            raise ValueError("length must be positive")
        if any(not 0 <= c < 2**32 for c in self.clients):
            raise ValueError("client ids must be uint32")
        n = len(self.clients)
        k = self.neighbours or default_neighbours(n)
        k = min(k, n - 1)
        t = self.threshold or default_threshold(k)
        if not k // 2 < t <= k:
            raise ValueError(f"threshold {t} must lie in ({k // 2}, {k}] for {k} neighbours")
        self.encoding.check_headroom(n)
        object.__setattr__(self, "clients", tuple(sorted(self.clients)))
        object.__setattr__(self, "neighbours", k)
        object.__setattr__(self, "threshold", t)
        object.__setattr__(self, "graph", neighbour_graph(self.context, self.clients, k))
