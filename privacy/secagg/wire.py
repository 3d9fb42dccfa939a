"""The protocol's messages at the wire's edge: size and duplicate checks, masked-input tensors.

The hosts map these to and from ``coordinator.proto`` (``fedft.server.secagg_proto`` and
``fedft.client.secagg_proto``); the checks live here, once, so a hostile peer's bytes are
refused with ProtocolError before they reach a state machine whichever side parses them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from numpy.typing import NDArray

from fedft.core.errors import ProtocolError

from .crypto import KEY_BYTES, SIGNATURE_BYTES
from .encoding import Encoding
from .messages import AdvertiseKeys
from .shamir import SHARE_BYTES

# The AEAD ciphertext of one share bundle: ids (8), two shares, nonce (12) and tag (16).
SEALED_BYTES = 8 + 2 * SHARE_BYTES + 12 + 16


def advertisement(sender: int, enc_public: bytes, mask_public: bytes, sig: bytes) -> AdvertiseKeys:
    """An advertisement, refusing keys or signatures of the wrong size."""
    if len(enc_public) != KEY_BYTES or len(mask_public) != KEY_BYTES:
        raise ProtocolError(f"advertised keys must be {KEY_BYTES} bytes each")
    if len(sig) != SIGNATURE_BYTES:
        raise ProtocolError(f"a key signature is {SIGNATURE_BYTES} bytes")
    return AdvertiseKeys(sender, bytes(enc_public), bytes(mask_public), bytes(sig))


def sealed_bundles(entries: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    """Share bundles by peer, refusing a second bundle for one peer or a wrong size."""
    out: dict[int, bytes] = {}
    for peer, ciphertext in entries:
        if peer in out:
            raise ProtocolError(f"two share bundles for client {peer}")
        if len(ciphertext) != SEALED_BYTES:
            raise ProtocolError(f"a sealed share bundle is {SEALED_BYTES} bytes")
        out[peer] = bytes(ciphertext)
    return out


def shares_by_owner(entries: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    """Shamir shares by the client they belong to, refusing duplicates or a wrong size."""
    out: dict[int, bytes] = {}
    for owner, share in entries:
        if owner in out:
            raise ProtocolError(f"two shares of client {owner}")
        if len(share) != SHARE_BYTES:
            raise ProtocolError(f"a share is {SHARE_BYTES} bytes")
        out[owner] = bytes(share)
    return out


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
