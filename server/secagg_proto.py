"""The coordinator's side of the SecAgg stage messages on ``coordinator.proto``."""

from __future__ import annotations

from collections.abc import Mapping

from fedft.privacy.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)
from fedft.privacy.secagg.wire import advertisement, sealed_bundles, shares_by_owner
from fedft.proto.v1 import coordinator_pb2 as pb


def keys_from_proto(msg: pb.SecAggKeys) -> AdvertiseKeys:
    """A device's advertisement (its sender id is checked against the caller by the host)."""
    return advertisement(msg.sender, msg.enc_public, msg.mask_public, msg.signature)


def broadcast_to_proto(
    broadcast: KeysBroadcast, identities: Mapping[int, bytes]
) -> pb.SecAggBroadcast:
    """The neighbours' keys, each with the enrolled identity key it must verify against."""
    return pb.SecAggBroadcast(
        neighbours=[
            pb.SecAggNeighbour(
                keys=pb.SecAggKeys(
                    sender=ad.sender,
                    enc_public=ad.enc_public,
                    mask_public=ad.mask_public,
                    signature=ad.signature,
                ),
                identity=identities[peer],
            )
            for peer, ad in sorted(broadcast.adverts.items())
        ]
    )


def share_keys_from_proto(sender: int, msg: pb.SecAggShares) -> ShareKeys:
    """A device's stage-2 message; ``sender`` is the authenticated caller's protocol id."""
    return ShareKeys(sender, sealed_bundles((e.peer, e.ciphertext) for e in msg.sealed))


def shares_to_proto(sealed: Mapping[int, bytes]) -> pb.SecAggShares:
    """The bundles addressed to one device, by sender."""
    return pb.SecAggShares(
        sealed=[pb.SecAggSealed(peer=p, ciphertext=c) for p, c in sorted(sealed.items())]
    )


def request_to_proto(request: UnmaskRequest) -> pb.SecAggUnmaskRequest:
    """The unmask question on the wire."""
    return pb.SecAggUnmaskRequest(
        survivors=sorted(request.survivors), dropped=sorted(request.dropped), total=request.total
    )


def unmask_from_proto(sender: int, msg: pb.SecAggUnmask) -> UnmaskResponse:
    """A device's stage-4 answer; ``sender`` is the authenticated caller's protocol id."""
    return UnmaskResponse(
        sender,
        shares_by_owner((s.owner, s.share) for s in msg.seed_shares),
        shares_by_owner((s.owner, s.share) for s in msg.key_shares),
    )
