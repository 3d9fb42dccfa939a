"""The protocol's message types, one per stage and direction, with their wire sizes.

Stages: (1) advertise keys, (2) share keys, (3) masked input, (4) unmask. Client -> server
messages carry the sender's id; server -> client messages are addressed by the host. ``nbytes``
is the size in a compact binary layout (documented per class: client ids 4 bytes, counts
4 bytes, keys 32, signatures 64, Shamir shares 66, ring elements 4 or 8), so hosts and the
benchmark can count traffic per client and stage before a wire format exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .crypto import KEY_BYTES, SIGNATURE_BYTES
from .shamir import SHARE_BYTES

ID_BYTES = 4


@dataclass(frozen=True)
class AdvertiseKeys:
    """Stage 1, client -> server: two fresh X25519 public keys signed by the client's identity.

    ``enc_public`` encrypts shares to the client, ``mask_public`` derives pairwise masks.
    Layout: id, enc key, mask key, signature.
    """

    sender: int
    enc_public: bytes
    mask_public: bytes
    signature: bytes

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        return ID_BYTES + 2 * KEY_BYTES + SIGNATURE_BYTES


@dataclass(frozen=True)
class KeysBroadcast:
    """Stage 1, server -> client: the advertisements of the client's neighbours, as received.

    Layout: count, then each advertisement.
    """

    adverts: Mapping[int, AdvertiseKeys]

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        return ID_BYTES + sum(a.nbytes for a in self.adverts.values())


@dataclass(frozen=True)
class ShareKeys:
    """Stage 2, client -> server: per neighbour, the sealed shares of the seed and mask key.

    Layout: id, count, then per receiver its id, a length and the ciphertext.
    """

    sender: int
    sealed: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        return 2 * ID_BYTES + sum(2 * ID_BYTES + len(c) for c in self.sealed.values())


@dataclass(frozen=True)
class SharesDelivery:
    """Stage 2, server -> client: the sealed shares addressed to the client, keyed by sender.

    Layout: count, then per sender its id, a length and the ciphertext.
    """

    sealed: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        return ID_BYTES + sum(2 * ID_BYTES + len(c) for c in self.sealed.values())


@dataclass(frozen=True)
class MaskedInput:
    """Stage 3, client -> server: the masked, encoded update (weight as the last element).

    Layout: id, length, elements.
    """

    sender: int
    vector: NDArray[np.unsignedinteger]

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        return 2 * ID_BYTES + int(self.vector.nbytes)


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 4, server -> client: which neighbours survived and which dropped after sharing.

    The client answers with self-mask seed shares of ``survivors`` and mask-key shares of
    ``dropped``; it refuses a request naming one client in both. ``total`` is the round's
    count of survivors (all of them, not only this client's neighbours): under distributed DP
    a client refuses to unmask a sum with fewer noise shares than it was calibrated for.
    Layout: two id lists and a count.
    """

    survivors: frozenset[int]
    dropped: frozenset[int]
    total: int = 0

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        return ID_BYTES * (3 + len(self.survivors) + len(self.dropped))


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 4, client -> server: the requested shares, by the client they belong to.

    Layout: id, two counts, then (id, share) pairs.
    """

    sender: int
    seed_shares: Mapping[int, bytes]
    key_shares: Mapping[int, bytes]

    @property
    def nbytes(self) -> int:
        """Wire size in bytes."""
        pairs = len(self.seed_shares) + len(self.key_shares)
        return 3 * ID_BYTES + pairs * (ID_BYTES + SHARE_BYTES)
