"""The server's side of SecAgg+ as a pure state machine: collect, then close, each stage.

The host feeds each client's message to ``receive_*`` and calls ``close_*`` at the stage's
deadline; whoever has not answered by then has dropped. Each close returns the messages to send
next, addressed by client id, and raises BelowThresholdError when too few clients remain, after
which the round is over (``failed`` is set) and nothing has been revealed. The server learns
the masked inputs, and at the end the sum of the survivors' encodings, never one input.

Sets (Bonawitz et al.): U1 advertised, U2 shared, U3 sent a masked input, U4 answered the
unmask request. A client v masked with exactly the senders whose shares it received
(``delivered[v]``), so those are the pairs to cancel and the holders to ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from . import crypto, shamir
from .config import RoundConfig
from .errors import BelowThresholdError, SecAggError, StageError
from .messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from .noisy import NoisyEncoding


class ServerStage(Enum):
    """Which messages the server currently accepts."""

    ADVERTISE = 1
    SHARE = 2
    MASK = 3
    UNMASK = 4
    DONE = 5


@dataclass(frozen=True)
class Aggregate:
    """The round's outcome: the ring sum of the survivors' encodings and who they were."""

    total: NDArray[np.unsignedinteger]
    survivors: tuple[int, ...]
    config: RoundConfig

    def decode(self) -> tuple[NDArray[np.float64], float]:
        """Return (sum of weight * clipped update, sum of weights) over the survivors."""
        return self.config.encoding.decode(self.total, len(self.survivors))


class SecAggServer:
    """The coordinator's protocol state for one round."""

    def __init__(self, config: RoundConfig) -> None:
        """Start a round with the given public parameters."""
        self.config = config
        self.stage = ServerStage.ADVERTISE
        self.failed: BelowThresholdError | None = None
        self._adverts: dict[int, AdvertiseKeys] = {}
        self._invited: set[int] = set()
        self._sealed: dict[int, Mapping[int, bytes]] = {}
        self._delivered: dict[int, frozenset[int]] = {}
        # Masked inputs are summed on arrival (wrapping in the ring): memory stays one vector
        # whatever the number of clients, and no single input is kept.
        self._masked: set[int] = set()
        self._total = np.zeros(config.length + 1, dtype=config.encoding.dtype)
        self._requests: dict[int, UnmaskRequest] = {}
        self._responses: dict[int, UnmaskResponse] = {}

    # --- bookkeeping ----------------------------------------------------------------------

    def _expect(
        self, stage: ServerStage, sender: int, allowed: set[int] | Mapping[int, object]
    ) -> None:
        if self.failed is not None:
            raise StageError(f"the round failed: {self.failed}")
        if self.stage is not stage:
            raise StageError(f"the server is at {self.stage.name}, not {stage.name}")
        if sender not in allowed:
            raise StageError(f"client {sender} is not expected at {stage.name}")

    def _fail(self, why: str) -> BelowThresholdError:
        self.failed = BelowThresholdError(why)
        self.stage = ServerStage.DONE
        return self.failed

    def _require(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            raise self._fail(f"{count} clients {what}; threshold {self.config.threshold}")

    def _close(self, stage: ServerStage) -> None:
        if self.failed is not None:
            raise StageError(f"the round failed: {self.failed}")
        if self.stage is not stage:
            raise StageError(f"the server is at {self.stage.name}, not {stage.name}")
        self.stage = ServerStage(stage.value + 1)

    # --- stage 1: advertise keys ----------------------------------------------------------

    def receive_advertise(self, msg: AdvertiseKeys) -> None:
        """Record one client's advertised keys."""
        self._expect(ServerStage.ADVERTISE, msg.sender, self.config.graph)
        if msg.sender in self._adverts:
            raise StageError(f"client {msg.sender} advertised twice")
        self._adverts[msg.sender] = msg

    def close_advertise(self) -> dict[int, KeysBroadcast]:
        """End stage 1; return each remaining client's neighbours' keys."""
        self._close(ServerStage.ADVERTISE)
        self._require(len(self._adverts), "advertised keys")
        out: dict[int, KeysBroadcast] = {}
        for c in self._adverts:
            near = {p: self._adverts[p] for p in self.config.graph[c] if p in self._adverts}
            if len(near) >= self.config.threshold:  # fewer could never be unmasked: leave out
                out[c] = KeysBroadcast(near)
        self._invited = set(out)
        self._require(len(out), "have enough neighbours with keys")
        return out

    # --- stage 2: share keys --------------------------------------------------------------

    def receive_shares(self, msg: ShareKeys) -> None:
        """Record one client's sealed shares."""
        self._expect(ServerStage.SHARE, msg.sender, self._invited)
        if msg.sender in self._sealed:
            raise StageError(f"client {msg.sender} shared twice")
        if not set(msg.sealed) <= set(self.config.graph[msg.sender]) & set(self._adverts):
            raise StageError(f"client {msg.sender} addressed shares to non-neighbours")
        self._sealed[msg.sender] = msg.sealed

    def close_shares(self) -> dict[int, SharesDelivery]:
        """End stage 2; return the sealed shares addressed to each remaining client."""
        self._close(ServerStage.SHARE)
        self._require(len(self._sealed), "shared keys")
        out: dict[int, SharesDelivery] = {}
        for v in self._sealed:
            got = {u: sealed[v] for u, sealed in self._sealed.items() if v in sealed}
            if len(got) >= self.config.threshold:
                out[v] = SharesDelivery(got)
        self._delivered = {v: frozenset(d.sealed) for v, d in out.items()}
        self._require(len(out), "received enough shares")
        return out

    # --- stage 3: masked input ------------------------------------------------------------

    def receive_masked(self, msg: MaskedInput) -> None:
        """Record one client's masked input."""
        self._expect(ServerStage.MASK, msg.sender, self._delivered)
        if msg.sender in self._masked:
            raise StageError(f"client {msg.sender} sent two inputs")
        enc = self.config.encoding
        if msg.vector.dtype != enc.dtype or msg.vector.shape != (self.config.length + 1,):
            raise StageError(f"client {msg.sender} sent a malformed masked input")
        self._masked.add(msg.sender)
        self._total += msg.vector

    def _holders(self, owner: int, among: Mapping[int, object] | set[int]) -> list[int]:
        return [v for v in among if owner in self._delivered.get(v, ())]

    def close_masked(self) -> dict[int, UnmaskRequest]:
        """End stage 3; return each survivor's unmask request, or fail if recovery is impossible."""
        self._close(ServerStage.MASK)
        alive = set(self._masked)
        self._require(len(alive), "sent masked inputs")
        noise = self.config.encoding
        if isinstance(noise, NoisyEncoding) and len(alive) < noise.survivors:
            # The survivors' noise shares add up to less than the round's noise: never unmask.
            raise self._fail(
                f"{len(alive)} masked inputs carry less noise than the {noise.survivors} "
                "survivors the distributed DP noise is calibrated for"
            )
        for v in sorted(alive):
            near = self._delivered[v]
            request = UnmaskRequest(frozenset(near & alive), frozenset(near - alive), len(alive))
            if len(request.survivors) >= self.config.threshold:  # others would refuse
                self._requests[v] = request
        asked = set(self._requests)
        dropped = set(self._delivered) - alive
        for owner in sorted(alive | dropped):
            have = len(self._holders(owner, asked))
            needed = owner in alive or any(owner in self._delivered[v] for v in alive)
            if needed and have < self.config.threshold:
                raise self._fail(f"only {have} survivors hold shares of client {owner}")
        return dict(self._requests)

    # --- stage 4: unmask ------------------------------------------------------------------

    def receive_unmask(self, msg: UnmaskResponse) -> None:
        """Record one client's revealed shares."""
        self._expect(ServerStage.UNMASK, msg.sender, self._requests)
        if msg.sender in self._responses:
            raise StageError(f"client {msg.sender} answered twice")
        req = self._requests[msg.sender]
        if set(msg.seed_shares) != set(req.survivors) or set(msg.key_shares) != set(req.dropped):
            raise StageError(f"client {msg.sender} answered a different request")
        self._responses[msg.sender] = msg

    def _rebuild(self, shares: Mapping[int, bytes], what: str) -> bytes:
        try:
            return shamir.combine(shares, self.config.threshold)
        except ValueError:  # a share out of range: some holder sent garbage
            raise SecAggError(f"the shares of {what} are inconsistent") from None

    def finish(self) -> Aggregate:
        """End stage 4: rebuild the secrets, strip every mask, return the survivors' sum."""
        self._close(ServerStage.UNMASK)
        cfg = self.config
        enc = cfg.encoding
        t = cfg.threshold
        alive = sorted(self._masked)
        size = cfg.length + 1
        total = self._total
        for u in alive:
            shares = {v: r.seed_shares[u] for v, r in self._responses.items() if u in r.seed_shares}
            if len(shares) < t:
                raise self._fail(f"{len(shares)} seed shares of client {u} came back; need {t}")
            seed = self._rebuild(shares, f"client {u}'s self-mask seed")
            total -= crypto.mask(crypto.self_mask_key(seed, cfg.context, u), size, enc.ring_bits)
        dropped = sorted({d for r in self._responses.values() for d in r.key_shares})
        for d in dropped:
            shares = {v: r.key_shares[d] for v, r in self._responses.items() if d in r.key_shares}
            if len(shares) < t:
                raise self._fail(f"{len(shares)} key shares of client {d} came back; need {t}")
            key = self._rebuild(shares, f"client {d}'s mask key")
            if crypto.public_of(key) != self._adverts[d].mask_public:
                raise SecAggError(f"the shares of client {d}'s mask key are inconsistent")
            for v in alive:
                if d not in self._delivered[v]:
                    continue
                shared = crypto.agree(key, self._adverts[v].mask_public)
                pair = crypto.mask(
                    crypto.pair_mask_key(shared, cfg.context, v, d), size, enc.ring_bits
                )
                # v added the mask if v < d and subtracted it otherwise: undo that.
                if v < d:
                    total -= pair
                else:
                    total += pair
        return Aggregate(total, tuple(alive), cfg)
