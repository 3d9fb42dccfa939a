"""Helpers that drive real clients and a real server stage by stage, for adversarial tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedft.privacy.secagg.client import SecAggClient
from fedft.privacy.secagg.config import RoundConfig
from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.graph import round_context
from fedft.privacy.secagg.messages import KeysBroadcast, SharesDelivery
from fedft.privacy.secagg.server import SecAggServer


@dataclass
class Round:
    """A round's config, its server and its clients, each with an enrolled identity."""

    config: RoundConfig
    server: SecAggServer
    clients: dict[int, SecAggClient]
    identities: dict[int, Ed25519PrivateKey]


def make_round(
    n: int,
    *,
    neighbours: int = 0,
    threshold: int = 0,
    length: int = 8,
    encoding: Encoding | None = None,
) -> Round:
    """Return a fresh round of ``n`` clients with ids 0..n-1."""
    enc = encoding or Encoding(32, 8, 4.0, 4.0)
    cfg = RoundConfig(round_context("test", 1), tuple(range(n)), length, enc, neighbours, threshold)
    identities = {i: Ed25519PrivateKey.generate() for i in range(n)}
    directory = {i: k.public_key() for i, k in identities.items()}
    clients = {
        i: SecAggClient(cfg, i, identities[i], directory, np.random.default_rng(i))
        for i in range(n)
    }
    return Round(cfg, SecAggServer(cfg), clients, identities)


def advertise(r: Round, skip: Iterable[int] = ()) -> dict[int, KeysBroadcast]:
    """Run stage 1 honestly, leaving out ``skip``; return the server's broadcasts."""
    gone = set(skip)
    for i, c in r.clients.items():
        if i not in gone:
            r.server.receive_advertise(c.advertise())
    return r.server.close_advertise()


def share(r: Round, skip: Iterable[int] = ()) -> dict[int, SharesDelivery]:
    """Run stages 1 and 2 honestly; return the server's share deliveries."""
    gone = set(skip)
    for i, msg in advertise(r).items():
        if i not in gone:
            r.server.receive_shares(r.clients[i].share_keys(msg))
    return r.server.close_shares()
