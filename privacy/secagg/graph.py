"""Round context and the seeded k-regular neighbour graph of SecAgg+ (logarithmic degree).

Construction (every party computes it, so the server cannot choose neighbourhoods): order the
participants by ``SHA-256("fedft-secagg-v1|graph" || context || id)``, place them on a ring in
that order, and connect each one to the ``k/2`` nearest positions on either side (a Harary
graph H(k, n)). ``k`` is even; with ``k >= n - 1`` the graph is complete. The order is seeded by
the round context alone, so it changes every round and no party can bias it without changing
the round.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence

DOMAIN = b"fedft-secagg-v1"


def round_context(session: str, server_round: int) -> bytes:
    """Return the 32-byte context that binds every key, share and mask to one round of one run."""
    if server_round < 0:
        raise ValueError("server_round must not be negative")
    raw = session.encode("utf-8")
    # Length-prefixed, so no (session, round) pair can be spelled as another.
    blob = (
        DOMAIN + b"|context|" + struct.pack(">I", len(raw)) + raw + struct.pack(">Q", server_round)
    )
    return hashlib.sha256(blob).digest()


def default_neighbours(n: int) -> int:
    """Return the default degree for ``n`` clients: the even number >= 2 log2(n), below n.

    Bell et al. need degree O(log n) for both privacy and dropout robustness; 2 log2(n) gives
    14 neighbours at 100 clients and 20 at 1,000 (Flower's examples use similar counts).
    """
    if n < 2:
        raise ValueError("secure aggregation needs at least two clients")
    k = 2 * math.ceil(math.log2(n))
    return min(k, n - 1)


def default_threshold(k: int) -> int:
    """Return the default threshold: the smallest strict majority of a neighbourhood of ``k``.

    Above k/2 is required: then the shares of one kind that a server could collect from one
    group of honest neighbours and those of the other kind from the rest cannot both reach it.
    """
    return k // 2 + 1


def _rank(context: bytes, client: int) -> bytes:
    return hashlib.sha256(DOMAIN + b"|graph|" + context + struct.pack(">I", client)).digest()


def neighbour_graph(context: bytes, clients: Sequence[int], k: int) -> dict[int, frozenset[int]]:
    """Return each client's neighbours in the seeded Harary graph H(k, n) described above."""
    ids = sorted(set(clients))
    if len(ids) != len(clients):
        raise ValueError("client ids must be distinct")
    n = len(ids)
    if n < 2:
        raise ValueError("secure aggregation needs at least two clients")
    if k >= n - 1:
        everyone = frozenset(ids)
        return {c: everyone - {c} for c in ids}
    if k < 2 or k % 2:
        raise ValueError(f"the degree must be even and at least 2 (or n - 1), got {k}")
    ring = sorted(ids, key=lambda c: _rank(context, c))
    half = k // 2
    graph: dict[int, frozenset[int]] = {}
    for pos, c in enumerate(ring):
        near = {ring[(pos + d) % n] for d in range(-half, half + 1) if d}
        graph[c] = frozenset(near)
    return graph
