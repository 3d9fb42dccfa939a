"""An honest client refuses what a malicious server could use to learn one client's input."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from scipy import stats

from fedft.privacy.secagg import crypto
from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.errors import (
    BelowThresholdError,
    KeyVerificationError,
    RefusedRequestError,
    ShareDecryptionError,
    StageError,
)
from fedft.privacy.secagg.messages import KeysBroadcast, SharesDelivery, UnmaskRequest

from .conftest import Round, advertise, make_round, share


def test_a_substituted_key_is_rejected() -> None:
    r = make_round(6)
    broadcasts = advertise(r)
    ad = broadcasts[0].adverts[1]
    evil = crypto.new_x25519()  # the server's own key, to man-in-the-middle client 1's masks
    swapped = dataclasses.replace(ad, mask_public=crypto.raw_public(evil))
    with pytest.raises(KeyVerificationError, match="client 1"):
        r.clients[0].share_keys(KeysBroadcast({**broadcasts[0].adverts, 1: swapped}))


def test_a_key_signed_by_anyone_but_the_enrolled_identity_is_rejected() -> None:
    r = make_round(6)
    broadcasts = advertise(r)
    enc, msk = os.urandom(32), os.urandom(32)
    forged_sig = crypto.sign_keys(r.identities[2], r.config.context, 1, enc, msk)
    forged = dataclasses.replace(
        broadcasts[0].adverts[1], enc_public=enc, mask_public=msk, signature=forged_sig
    )
    with pytest.raises(KeyVerificationError):
        r.clients[0].share_keys(KeysBroadcast({**broadcasts[0].adverts, 1: forged}))


def test_keys_of_strangers_and_too_few_neighbours_are_refused() -> None:
    r = make_round(12, neighbours=4)
    broadcasts = advertise(r)
    stranger = next(c for c in range(12) if c not in r.clients[0].neighbours and c != 0)
    foreign = broadcasts[stranger].adverts[next(iter(broadcasts[stranger].adverts))]
    with pytest.raises(RefusedRequestError):
        r.clients[0].share_keys(KeysBroadcast({**broadcasts[0].adverts, stranger: foreign}))
    few = dict(list(broadcasts[1].adverts.items())[:2])
    with pytest.raises(BelowThresholdError):
        r.clients[1].share_keys(KeysBroadcast(few))


def test_tampered_and_swapped_share_ciphertexts_are_rejected() -> None:
    r = make_round(6)
    deliveries = share(r)
    sealed = dict(deliveries[0].sealed)
    bad = bytearray(sealed[1])
    bad[30] ^= 0x40
    with pytest.raises(ShareDecryptionError, match="from 1 to 0"):
        r.clients[0].masked_input(SharesDelivery({**sealed, 1: bytes(bad)}), np.zeros(8), 1.0)
    # Client 2's share relabelled as client 1's, or client 1's share for 3 sent to 0.
    r = make_round(6)
    deliveries = share(r)
    sealed = dict(deliveries[0].sealed)
    with pytest.raises(ShareDecryptionError):
        r.clients[0].masked_input(SharesDelivery({**sealed, 1: sealed[2]}), np.zeros(8), 1.0)
    r = make_round(6)
    deliveries = share(r)
    sealed = dict(deliveries[0].sealed)
    with pytest.raises(ShareDecryptionError):
        r.clients[0].masked_input(
            SharesDelivery({**sealed, 1: deliveries[3].sealed[1]}), np.zeros(8), 1.0
        )


def _unmask_ready(n: int = 6) -> tuple[Round, dict[int, UnmaskRequest]]:
    r = make_round(n)
    for i, msg in share(r).items():
        r.server.receive_masked(r.clients[i].masked_input(msg, np.zeros(8), 1.0))
    return r, r.server.close_masked()


def test_a_server_asking_for_both_shares_of_one_client_is_refused() -> None:
    r, requests = _unmask_ready()
    req = requests[0]
    greedy = UnmaskRequest(req.survivors, frozenset({1}))  # 1 named survivor and dropped
    client = r.clients[0]
    with pytest.raises(RefusedRequestError, match="both shares"):
        client.unmask(greedy)
    with pytest.raises(StageError):  # one request per round: no second try with split lists
        client.unmask(UnmaskRequest(frozenset(), frozenset({1})))


def test_requests_that_isolate_a_client_are_refused() -> None:
    r, requests = _unmask_ready()
    clients = r.clients
    # "Everyone but 1 dropped": key shares of all would unmask 1's input alone.
    with pytest.raises(BelowThresholdError):
        clients[0].unmask(UnmaskRequest(frozenset({1}), frozenset({2, 3, 4, 5})))
    with pytest.raises(RefusedRequestError, match="did not drop"):
        clients[1].unmask(UnmaskRequest(frozenset({0, 2, 3}), frozenset({1})))
    with pytest.raises(RefusedRequestError, match="holds no shares"):
        clients[2].unmask(UnmaskRequest(frozenset({0, 1, 3, 99}), frozenset()))
    assert clients[3].unmask(requests[3]).sender == 3


def test_stages_run_in_order_only() -> None:
    r = make_round(4)
    with pytest.raises(StageError):
        r.clients[0].masked_input(SharesDelivery({}), np.zeros(8), 1.0)
    r.clients[1].advertise()
    with pytest.raises(StageError):
        r.clients[1].advertise()


def _masked(update: np.ndarray) -> np.ndarray:
    enc = Encoding(32, 16, 1.0, 1.0)
    r = make_round(5, length=update.size, encoding=enc)
    deliveries = share(r)
    return r.clients[0].masked_input(deliveries[0], update, 1.0).vector


def test_a_masked_vector_alone_is_uniform_whatever_the_update() -> None:
    n = 40_000
    rng = np.random.default_rng(1234)  # fixed updates; the masks come from the OS CSPRNG
    updates = {
        "zeros": np.zeros(n),
        "constant max": np.ones(n),
        "ramp": np.linspace(-1, 1, n),
        "random": rng.uniform(-1, 1, n),
    }
    for name, update in updates.items():
        y = _masked(update)
        for shift in (24, 8, 0):  # high, middle and low byte of each ring element
            counts = np.bincount((y >> np.uint32(shift)) & np.uint32(255), minlength=256)
            p = stats.chisquare(counts).pvalue
            assert p > 1e-6, (name, shift, p)
        # No linear relation with the update either.
        corr = np.corrcoef(y.astype(np.float64)[:-1], update)[0, 1] if update.std() else 0.0
        assert abs(corr) < 0.03, (name, corr)
