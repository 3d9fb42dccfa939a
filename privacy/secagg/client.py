"""The client's side of SecAgg+ as a pure state machine: one method per stage, in order.

The client keeps its secrets (two X25519 private keys, the self-mask seed) and checks what the
untrusted server relays: every neighbour key must carry a valid signature by that neighbour's
enrolled Ed25519 identity, every share must authenticate, and an unmask request is refused if
it names one client both as survivor and as dropped, asks about a client that never shared with
this one, leaves fewer than threshold survivors, or (distributed DP) claims fewer survivors in
all than the round's noise is calibrated for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from numpy.typing import NDArray

from . import crypto, shamir
from .config import RoundConfig
from .errors import BelowThresholdError, RefusedRequestError, ShareDecryptionError, StageError
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

_BUNDLE = 8 + 2 * shamir.SHARE_BYTES  # sender id, receiver id, seed share, key share


class ClientStage(Enum):
    """Where a client is in the round."""

    ADVERTISE = 1
    SHARE = 2
    MASK = 3
    UNMASK = 4
    DONE = 5


class SecAggClient:
    """One client's protocol state for one round."""

    def __init__(
        self,
        config: RoundConfig,
        client_id: int,
        identity: Ed25519PrivateKey,
        directory: Mapping[int, Ed25519PublicKey],
        rng: np.random.Generator | None = None,
    ) -> None:
        """Set up for a round; ``directory`` maps neighbour ids to their enrolled identity keys."""
        if client_id not in config.graph:
            raise ValueError(f"client {client_id} is not a participant of this round")
        self.config = config
        self.id = client_id
        self.neighbours = config.graph[client_id]
        self._identity = identity
        self._directory = directory
        # Stochastic rounding noise only; its predictability would not weaken the masks.
        self._rng = rng if rng is not None else np.random.default_rng()  # OS-seeded
        self._enc_key = crypto.new_x25519()
        self._mask_key = crypto.new_x25519()
        self._seed = os.urandom(shamir.SECRET_BYTES)
        self._peers: dict[int, AdvertiseKeys] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # sender -> (seed share, key share)
        self.stage = ClientStage.ADVERTISE

    def _enter(self, stage: ClientStage) -> None:
        if self.stage is not stage:
            raise StageError(f"client {self.id} is at {self.stage.name}, not {stage.name}")
        self.stage = ClientStage(stage.value + 1)

    def advertise(self) -> AdvertiseKeys:
        """Stage 1: publish two fresh public keys, signed with the enrolled identity."""
        self._enter(ClientStage.ADVERTISE)
        enc = crypto.raw_public(self._enc_key)
        msk = crypto.raw_public(self._mask_key)
        sig = crypto.sign_keys(self._identity, self.config.context, self.id, enc, msk)
        return AdvertiseKeys(self.id, enc, msk, sig)

    def share_keys(self, broadcast: KeysBroadcast) -> ShareKeys:
        """Stage 2: verify the neighbours' keys, then seal shares of both secrets to each."""
        self._enter(ClientStage.SHARE)
        ctx = self.config.context
        for peer, ad in broadcast.adverts.items():
            if peer not in self.neighbours or ad.sender != peer:
                raise RefusedRequestError(f"client {self.id} got keys of non-neighbour {peer}")
            if peer not in self._directory:
                raise RefusedRequestError(f"client {peer} has no enrolled identity")
            crypto.verify_keys(
                self._directory[peer],
                ctx,
                client=peer,
                enc_public=ad.enc_public,
                mask_public=ad.mask_public,
                signature=ad.signature,
            )
        if len(broadcast.adverts) < self.config.threshold:
            raise BelowThresholdError(
                f"client {self.id}: {len(broadcast.adverts)} neighbours advertised keys, "
                f"threshold {self.config.threshold}"
            )
        self._peers = dict(broadcast.adverts)
        holders = sorted(self._peers)
        t = self.config.threshold
        seed_shares = shamir.split(self._seed, holders, t)
        key_shares = shamir.split(crypto.raw_private(self._mask_key), holders, t)
        sealed: dict[int, bytes] = {}
        for peer in holders:
            plain = (
                self.id.to_bytes(4, "big")
                + peer.to_bytes(4, "big")
                + seed_shares[peer]
                + key_shares[peer]
            )
            shared = crypto.agree(self._enc_key, self._peers[peer].enc_public)
            sealed[peer] = crypto.seal_share(shared, ctx, self.id, peer, plain)
        return ShareKeys(self.id, sealed)

    def masked_input(
        self, delivery: SharesDelivery, vector: NDArray[np.floating], weight: float
    ) -> MaskedInput:
        """Stage 3: open the shares addressed here, then send the masked, encoded update."""
        self._enter(ClientStage.MASK)
        cfg = self.config
        ctx = cfg.context
        for sender, sealed in delivery.sealed.items():
            if sender not in self._peers:
                raise RefusedRequestError(f"client {self.id} got shares from stranger {sender}")
            shared = crypto.agree(self._enc_key, self._peers[sender].enc_public)
            plain = crypto.open_share(shared, ctx, sender, self.id, sealed)
            head = sender.to_bytes(4, "big") + self.id.to_bytes(4, "big")
            if len(plain) != _BUNDLE or plain[:8] != head:
                raise ShareDecryptionError(f"share bundle from {sender} is malformed")
            cut = 8 + shamir.SHARE_BYTES
            self._held[sender] = (plain[8:cut], plain[cut:])
        if len(self._held) < cfg.threshold:
            raise BelowThresholdError(
                f"client {self.id}: shares from {len(self._held)} neighbours, "
                f"threshold {cfg.threshold}"
            )
        if np.asarray(vector).size != cfg.length:
            raise ValueError(f"update has {np.asarray(vector).size} values, not {cfg.length}")
        enc = cfg.encoding
        y = enc.encode(vector, weight, self._rng)
        size = y.size
        y += crypto.mask(crypto.self_mask_key(self._seed, ctx, self.id), size, enc.ring_bits)
        # Masks only with neighbours that shared: those are the ones the server can unmask.
        for peer in sorted(self._held):
            shared = crypto.agree(self._mask_key, self._peers[peer].mask_public)
            pair = crypto.mask(
                crypto.pair_mask_key(shared, ctx, self.id, peer), size, enc.ring_bits
            )
            if self.id < peer:  # the lower id adds, the higher id subtracts
                y += pair
            else:
                y -= pair
        return MaskedInput(self.id, y)

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 4: seed shares of survivors, key shares of the dropped, never both for one."""
        self._enter(ClientStage.UNMASK)
        both = request.survivors & request.dropped
        if both:
            raise RefusedRequestError(
                f"client {self.id} refuses to reveal both shares of clients {sorted(both)}"
            )
        unknown = (request.survivors | request.dropped) - set(self._held) - {self.id}
        if unknown:
            raise RefusedRequestError(f"client {self.id} holds no shares of {sorted(unknown)}")
        if self.id in request.dropped:
            raise RefusedRequestError(f"client {self.id} sent its input; it did not drop")
        noise = self.config.encoding
        if isinstance(noise, NoisyEncoding) and request.total < noise.survivors:
            # Fewer noise shares than calibrated for: the sum would be less private than the
            # round promised, so this client's masks stay on.
            raise BelowThresholdError(
                f"client {self.id}: {request.total} survivors carry less noise than the "
                f"{noise.survivors} the round's distributed DP is calibrated for"
            )
        # Fewer survivors than t could not unmask this client anyway; a request like that can
        # only aim at isolating one input, so an honest client stops here.
        alive = request.survivors - {self.id}
        if len(alive) < self.config.threshold:
            raise BelowThresholdError(
                f"client {self.id}: {len(alive)} surviving neighbours, "
                f"threshold {self.config.threshold}"
            )
        seeds = {p: self._held[p][0] for p in sorted(request.survivors - {self.id})}
        keys = {p: self._held[p][1] for p in sorted(request.dropped)}
        return UnmaskResponse(self.id, seeds, keys)
