"""Deterministic, platform-independent client sampling and per-client seeds."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TypeVar

ClientT = TypeVar("ClientT")


def _key(*parts: object) -> int:
    """Hash parts to 64 bits with BLAKE2b: the same on every host, Python and numpy version."""
    text = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


SEED_BITS = 63  # seeds travel as the wire format's int64, so they stay non-negative there


def client_seed(seed: int, server_round: int, client_id: str) -> int:
    """Return the 63-bit seed a client uses for its local work in one round."""
    return _key("client", seed, server_round, client_id) & ((1 << SEED_BITS) - 1)


def sample_clients(
    clients: Sequence[ClientT],
    ids: Sequence[str],
    *,
    fraction: float,
    min_clients: int,
    seed: int,
    server_round: int,
) -> list[ClientT]:
    """Pick ``max(min_clients, ceil(fraction * n))`` clients, or none if fewer than min_clients.

    Each client gets a hash key from (seed, round, id) and the smallest keys win, so the choice
    depends only on the set of ids, not on their order or on any RNG library.
    """
    if len(clients) != len(ids):
        raise ValueError("clients and ids differ in length")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if len(clients) < min_clients or not clients:
        return []
    k = min(len(clients), max(min_clients, math.ceil(fraction * len(clients))))
    ranked = sorted(
        range(len(clients)), key=lambda i: (_key("sample", seed, server_round, ids[i]), ids[i])
    )
    chosen = sorted(ranked[:k], key=lambda i: ids[i])
    return [clients[i] for i in chosen]
