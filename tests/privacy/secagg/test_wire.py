"""Stage messages at the wire's edge: refusals of hostile sizes, round trips through both hosts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedft.client import secagg_proto as device
from fedft.core.errors import ProtocolError
from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.messages import UnmaskRequest, UnmaskResponse
from fedft.privacy.secagg.shamir import SHARE_BYTES
from fedft.privacy.secagg.wire import (
    SEALED_BYTES,
    advertisement,
    masked_tensor,
    masked_vector,
    sealed_bundles,
    shares_by_owner,
)
from fedft.server import secagg_proto as server
from tests.privacy.secagg.conftest import advertise, make_round


def test_hostile_sizes_and_duplicates_are_refused() -> None:
    with pytest.raises(ProtocolError, match="32 bytes"):
        advertisement(1, b"k" * 31, b"m" * 32, b"s" * 64)
    with pytest.raises(ProtocolError, match="64 bytes"):
        advertisement(1, b"k" * 32, b"m" * 32, b"s" * 65)
    with pytest.raises(ProtocolError, match="two share bundles"):
        sealed_bundles([(2, b"x" * SEALED_BYTES), (2, b"y" * SEALED_BYTES)])
    with pytest.raises(ProtocolError, match=f"{SEALED_BYTES} bytes"):
        sealed_bundles([(2, b"x")])
    with pytest.raises(ProtocolError, match="two shares"):
        shares_by_owner([(3, b"s" * SHARE_BYTES), (3, b"t" * SHARE_BYTES)])
    with pytest.raises(ProtocolError, match=f"{SHARE_BYTES} bytes"):
        shares_by_owner([(3, b"s")])


@pytest.mark.parametrize("ring", [32, 64])
def test_masked_inputs_keep_every_bit(ring: int) -> None:
    enc = Encoding(ring_bits=ring)
    vector = np.random.default_rng(0).integers(0, 2**ring, size=9, dtype=enc.dtype)
    tensor = masked_tensor(vector)
    np.testing.assert_array_equal(masked_vector(tensor, enc, 8), vector)
    with pytest.raises(ProtocolError, match="shape"):
        masked_vector(tensor, enc, 9)
    with pytest.raises(ProtocolError, match="masked input"):
        masked_vector(tensor.to(torch.float32), enc, 8)


def test_every_stage_message_survives_the_wire_both_ways() -> None:
    r = make_round(5)
    broadcasts = advertise(r)
    identities = {i: r.identities[i].public_key().public_bytes_raw() for i in range(5)}
    for pid, broadcast in broadcasts.items():
        wire = server.broadcast_to_proto(broadcast, identities)
        keys, directory = device.broadcast_from_proto(wire)
        assert keys == broadcast
        assert set(directory) == set(broadcast.adverts)
        shares = r.clients[pid].share_keys(keys)
        back = server.share_keys_from_proto(pid, device.shares_to_proto(shares.sealed))
        assert back == shares
    request = UnmaskRequest(frozenset({1, 2}), frozenset({3}))
    assert device.request_from_proto(server.request_to_proto(request)) == request
    answer = UnmaskResponse(0, {1: b"a" * SHARE_BYTES}, {3: b"b" * SHARE_BYTES})
    assert server.unmask_from_proto(0, device.unmask_to_proto(answer)) == answer
