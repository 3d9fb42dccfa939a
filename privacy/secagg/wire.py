"""The protocol's messages on the gRPC wire: to and from ``coordinator.proto``'s SecAgg types.

Every parse checks sizes and duplicates and raises ProtocolError, so a hostile peer's bytes
are refused before they reach a state machine. The sender of a client's message is the
authenticated caller, never a field it wrote, except inside a signed advertisement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from numpy.typing import NDArray

from fedft.core.errors import ProtocolError
from fedft.core.identity import load_public_key
from fedft.proto.v1 import coordinator_pb2 as pb

from .crypto import KEY_BYTES, SIGNATURE_BYTES
from .encoding import Encoding
from .messages import (
    AdvertiseKeys,
    KeysBroadcast,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from .shamir import SHARE_BYTES

# The AEAD ciphertext of one share bundle: ids (8), two shares, nonce (12) and tag (16).
SEALED_BYTES = 8 + 2 * SHARE_BYTES + 12 + 16


def keys_to_proto(msg: AdvertiseKeys) -> pb.SecAggKeys:
    """An advertisement on the wire."""
    return pb.SecAggKeys(
        sender=msg.sender,
        enc_public=msg.enc_public,
        mask_public=msg.mask_public,
        signature=msg.signature,
    )


def keys_from_proto(msg: pb.SecAggKeys) -> AdvertiseKeys:
    """Parse an advertisement, refusing keys or signatures of the wrong size."""
    if len(msg.enc_public) != KEY_BYTES or len(msg.mask_public) != KEY_BYTES:
        raise ProtocolError(f"advertised keys must be {KEY_BYTES} bytes each")
    if len(msg.signature) != SIGNATURE_BYTES:
        raise ProtocolError(f"a key signature is {SIGNATURE_BYTES} bytes")
    return AdvertiseKeys(msg.sender, msg.enc_public, msg.mask_public, msg.signature)


def broadcast_to_proto(
    broadcast: KeysBroadcast, identities: Mapping[int, bytes]
) -> pb.SecAggBroadcast:
    """The neighbours' keys, each with the enrolled identity key it must verify against."""
    return pb.SecAggBroadcast(
        neighbours=[
            pb.SecAggNeighbour(keys=keys_to_proto(ad), identity=identities[peer])
            for peer, ad in sorted(broadcast.adverts.items())
        ]
    )


def broadcast_from_proto(
    msg: pb.SecAggBroadcast,
) -> tuple[KeysBroadcast, dict[int, Ed25519PublicKey]]:
    """Parse a broadcast into the keys and the directory of identity keys they name."""
    adverts: dict[int, AdvertiseKeys] = {}
    directory: dict[int, Ed25519PublicKey] = {}
    for entry in msg.neighbours:
        ad = keys_from_proto(entry.keys)
        if ad.sender in adverts:
            raise ProtocolError(f"client {ad.sender} advertised twice")
        try:
            directory[ad.sender] = load_public_key(entry.identity)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        adverts[ad.sender] = ad
    return KeysBroadcast(adverts), directory


def _sealed(entries: Iterable[pb.SecAggSealed]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for entry in entries:
        if entry.peer in out:
            raise ProtocolError(f"two share bundles for client {entry.peer}")
        if len(entry.ciphertext) != SEALED_BYTES:
            raise ProtocolError(f"a sealed share bundle is {SEALED_BYTES} bytes")
        out[entry.peer] = entry.ciphertext
    return out


def shares_to_proto(sealed: Mapping[int, bytes]) -> pb.SecAggShares:
    """Share bundles by peer (receiver when a client sends, sender when it receives)."""
    return pb.SecAggShares(
        sealed=[pb.SecAggSealed(peer=p, ciphertext=c) for p, c in sorted(sealed.items())]
    )


def share_keys_from_proto(sender: int, msg: pb.SecAggShares) -> ShareKeys:
    """A client's stage-2 message; ``sender`` is the authenticated caller's protocol id."""
    return ShareKeys(sender, _sealed(msg.sealed))


def delivery_from_proto(msg: pb.SecAggShares) -> SharesDelivery:
    """The bundles addressed to this client, by sender."""
    return SharesDelivery(_sealed(msg.sealed))


def request_to_proto(request: UnmaskRequest) -> pb.SecAggUnmaskRequest:
    """The unmask question on the wire."""
    return pb.SecAggUnmaskRequest(
        survivors=sorted(request.survivors), dropped=sorted(request.dropped)
    )


def request_from_proto(msg: pb.SecAggUnmaskRequest) -> UnmaskRequest:
    """Parse the unmask question (the client's own checks follow in ``SecAggClient.unmask``)."""
    return UnmaskRequest(frozenset(msg.survivors), frozenset(msg.dropped))


def unmask_to_proto(msg: UnmaskResponse) -> pb.SecAggUnmask:
    """The revealed shares on the wire."""
    return pb.SecAggUnmask(
        seed_shares=[pb.SecAggShare(owner=o, share=s) for o, s in sorted(msg.seed_shares.items())],
        key_shares=[pb.SecAggShare(owner=o, share=s) for o, s in sorted(msg.key_shares.items())],
    )


def _shares(entries: Iterable[pb.SecAggShare]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for entry in entries:
        if entry.owner in out:
            raise ProtocolError(f"two shares of client {entry.owner}")
        if len(entry.share) != SHARE_BYTES:
            raise ProtocolError(f"a share is {SHARE_BYTES} bytes")
        out[entry.owner] = entry.share
    return out


def unmask_from_proto(sender: int, msg: pb.SecAggUnmask) -> UnmaskResponse:
    """A client's stage-4 answer; ``sender`` is the authenticated caller's protocol id."""
    return UnmaskResponse(sender, _shares(msg.seed_shares), _shares(msg.key_shares))


def masked_tensor(vector: NDArray[np.unsignedinteger]) -> torch.Tensor:
    """A masked input as a payload tensor: the ring elements' bits as a signed integer tensor."""
    signed = np.int32 if vector.dtype == np.uint32 else np.int64
    return torch.from_numpy(np.ascontiguousarray(vector).view(signed).copy())


def masked_vector(
    tensor: torch.Tensor, encoding: Encoding, length: int
) -> NDArray[np.unsignedinteger]:
    """Read a masked input back into ring elements; refuses the wrong dtype or length."""
    signed = torch.int32 if encoding.ring_bits == 32 else torch.int64
    if tensor.dtype != signed or tuple(tensor.shape) != (length + 1,):
        raise ProtocolError(
            f"a masked input is {signed} of shape ({length + 1},), got "
            f"{tensor.dtype} {tuple(tensor.shape)}"
        )
    return tensor.numpy().view(encoding.dtype)
