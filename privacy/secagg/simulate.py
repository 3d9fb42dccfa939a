"""Run the whole protocol in one process over N update vectors, counting bytes and CPU.

This is the adapter hosts and ``benchmarks/secagg.py`` use before (and besides) a wire: it
plays the server and every client, passes each message by reference exactly as a network would
carry it, and records each message's wire size per client and stage, and each party's CPU time.
Clients can be made to drop before any stage to exercise recovery.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from .client import SecAggClient
from .config import RoundConfig
from .encoding import Encoding
from .graph import round_context
from .server import SecAggServer

STAGES = ("advertise", "share", "mask", "unmask")
T = TypeVar("T")


@dataclass
class SecAggStats:
    """What a simulated round cost and who took part."""

    config: RoundConfig
    survivors: tuple[int, ...] = ()
    total_weight: float = 0.0
    # (client, stage) -> bytes the client sent in that stage / received to start it (the keys
    # before "share", the shares before "mask", the request before "unmask").
    sent: dict[tuple[int, str], int] = field(default_factory=dict)
    received: dict[tuple[int, str], int] = field(default_factory=dict)
    client_cpu: dict[int, float] = field(default_factory=dict)
    server_cpu: float = 0.0

    def client_bytes(self, client: int) -> int:
        """Return all bytes one client sent and received over the round."""
        up = sum(b for (c, _), b in self.sent.items() if c == client)
        return up + sum(b for (c, _), b in self.received.items() if c == client)


def _timed(cost: dict[int, float], who: int, call: Callable[[], T]) -> T:
    start = time.thread_time()
    try:
        return call()
    finally:
        cost[who] = cost.get(who, 0.0) + time.thread_time() - start


def secure_sum(
    vectors: Sequence[Any],
    weights: Sequence[float] | None = None,
    *,
    encoding: Encoding | None = None,
    neighbours: int = 0,
    threshold: int = 0,
    dropouts: Mapping[str, Collection[int]] | None = None,
    session: str = "simulation",
    server_round: int = 0,
    seed: int | None = None,
) -> tuple[NDArray[np.float64], SecAggStats]:
    """Securely sum ``weights[i] * clip(vectors[i])``; return the sum and the round's stats.

    ``vectors`` may be any sequence (a lazy one keeps memory at one vector per client in flight).

    Client i gets id i. ``dropouts`` maps a stage name (see STAGES) to the clients that vanish
    before sending that stage's message. The default encoding is ``Encoding.fit`` for N clients
    with clip 1 and max_weight max(weights). ``seed`` fixes the stochastic rounding only (the
    keys and masks always come from the OS CSPRNG). Raises BelowThresholdError when the round
    fails; the weighted mean is ``sum / stats.total_weight``.
    """
    n = len(vectors)
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    if len(w) != n:
        raise ValueError("one weight per vector")
    if encoding is None:
        encoding = Encoding.fit(n, max_weight=max(*w, 1e-12))
    cfg = RoundConfig(
        round_context(session, server_round),
        tuple(range(n)),
        int(np.asarray(vectors[0]).size),
        encoding,
        neighbours,
        threshold,
    )
    gone = {s: set(dropouts.get(s, ())) if dropouts else set() for s in STAGES}
    identities = {i: Ed25519PrivateKey.generate() for i in range(n)}
    directory = {i: k.public_key() for i, k in identities.items()}
    stats = SecAggStats(cfg)
    cpu = stats.client_cpu
    rngs = np.random.SeedSequence(seed).spawn(n)
    clients = {
        i: _timed(
            cpu,
            i,
            partial(SecAggClient, cfg, i, identities[i], directory, np.random.default_rng(rngs[i])),
        )
        for i in range(n)
    }
    server = SecAggServer(cfg)
    server_cpu: dict[int, float] = {}

    def up(stage: str, msg: Any, receive: Callable[[Any], None]) -> None:
        stats.sent[(msg.sender, stage)] = msg.nbytes
        _timed(server_cpu, 0, lambda: receive(msg))

    def down(stage: str, out: Mapping[int, Any]) -> dict[int, Any]:
        live = {c: m for c, m in out.items() if c not in gone[stage]}
        for c, m in live.items():
            stats.received[(c, stage)] = m.nbytes
        return live

    try:
        for i, c in clients.items():
            if i not in gone["advertise"]:
                up("advertise", _timed(cpu, i, c.advertise), server.receive_advertise)
        keys = down("share", _timed(server_cpu, 0, server.close_advertise))
        for i, keys_msg in keys.items():
            shared = _timed(cpu, i, partial(clients[i].share_keys, keys_msg))
            up("share", shared, server.receive_shares)
        shares = down("mask", _timed(server_cpu, 0, server.close_shares))
        for i, shares_msg in shares.items():
            # Read each vector only when its client needs it: ``vectors`` may be lazy.
            vector = np.asarray(vectors[i], dtype=np.float64).reshape(-1)
            call = partial(clients[i].masked_input, shares_msg, vector, w[i])
            up("mask", _timed(cpu, i, call), server.receive_masked)
        requests = down("unmask", _timed(server_cpu, 0, server.close_masked))
        for i, request in requests.items():
            up("unmask", _timed(cpu, i, partial(clients[i].unmask, request)), server.receive_unmask)
        result = _timed(server_cpu, 0, server.finish)
        total, weight = _timed(server_cpu, 0, result.decode)
    finally:
        stats.server_cpu = server_cpu.get(0, 0.0)
    stats.survivors = result.survivors
    stats.total_weight = weight
    return total, stats
