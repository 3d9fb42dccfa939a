"""The device's side of the SecAgg stage messages on ``coordinator.proto``."""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedft.core.errors import ProtocolError
from fedft.core.identity import load_public_key
from fedft.privacy.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from fedft.privacy.secagg.wire import advertisement, sealed_bundles
from fedft.proto.v1 import coordinator_pb2 as pb


def keys_to_proto(msg: AdvertiseKeys) -> pb.SecAggKeys:
    """This device's advertisement on the wire."""
    return pb.SecAggKeys(
        sender=msg.sender,
        enc_public=msg.enc_public,
        mask_public=msg.mask_public,
        signature=msg.signature,
    )


def broadcast_from_proto(
    msg: pb.SecAggBroadcast,
) -> tuple[KeysBroadcast, dict[int, Ed25519PublicKey]]:
    """The neighbours' keys and the directory of identity keys they must verify against."""
    adverts: dict[int, AdvertiseKeys] = {}
    directory: dict[int, Ed25519PublicKey] = {}
    for entry in msg.neighbours:
        k = entry.keys
        ad = advertisement(k.sender, k.enc_public, k.mask_public, k.signature)
        if ad.sender in adverts:
            raise ProtocolError(f"client {ad.sender} advertised twice")
        try:
            directory[ad.sender] = load_public_key(entry.identity)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        adverts[ad.sender] = ad
    return KeysBroadcast(adverts), directory


def shares_to_proto(sealed: Mapping[int, bytes]) -> pb.SecAggShares:
    """This device's sealed bundles, by receiving neighbour."""
    return pb.SecAggShares(
        sealed=[pb.SecAggSealed(peer=p, ciphertext=c) for p, c in sorted(sealed.items())]
    )


def delivery_from_proto(msg: pb.SecAggShares) -> SharesDelivery:
    """The bundles addressed to this device, by sender."""
    return SharesDelivery(sealed_bundles((e.peer, e.ciphertext) for e in msg.sealed))


def request_from_proto(msg: pb.SecAggUnmaskRequest) -> UnmaskRequest:
    """The unmask question (the device's own checks follow in ``SecAggClient.unmask``)."""
    return UnmaskRequest(frozenset(msg.survivors), frozenset(msg.dropped), msg.total)


def unmask_to_proto(msg: UnmaskResponse) -> pb.SecAggUnmask:
    """The revealed shares on the wire."""
    return pb.SecAggUnmask(
        seed_shares=[pb.SecAggShare(owner=o, share=s) for o, s in sorted(msg.seed_shares.items())],
        key_shares=[pb.SecAggShare(owner=o, share=s) for o, s in sorted(msg.key_shares.items())],
    )
