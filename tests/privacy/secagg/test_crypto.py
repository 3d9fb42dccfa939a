"""Primitives: masks are deterministic per key, keys are bound, shares and keys are authentic."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedft.privacy.secagg import crypto
from fedft.privacy.secagg.errors import KeyVerificationError, ShareDecryptionError
from fedft.privacy.secagg.graph import round_context

CTX = round_context("run", 7)


def test_mask_is_a_deterministic_keystream_in_the_ring() -> None:
    key = os.urandom(32)
    a = crypto.mask(key, 1000, 32)
    assert a.dtype == np.uint32
    assert a.shape == (1000,)
    assert np.array_equal(a, crypto.mask(key, 1000, 32))
    # A prefix of a longer stream: the mask of element i depends on i only.
    assert np.array_equal(a[:10], crypto.mask(key, 10, 32))
    assert not np.array_equal(a, crypto.mask(os.urandom(32), 1000, 32))
    assert crypto.mask(key, 5, 64).dtype == np.uint64


def test_derived_keys_bind_purpose_round_and_both_ids() -> None:
    secret = os.urandom(32)
    base = crypto.pair_mask_key(secret, CTX, 3, 9)
    assert base == crypto.pair_mask_key(secret, CTX, 9, 3)  # symmetric for the pair
    assert base != crypto.pair_mask_key(secret, CTX, 3, 8)
    assert base != crypto.pair_mask_key(secret, round_context("run", 8), 3, 9)
    assert base != crypto.hkdf(secret, b"share-enc", CTX, 3, 9)
    assert crypto.self_mask_key(secret, CTX, 3) != crypto.self_mask_key(secret, CTX, 4)


def test_key_agreement_is_symmetric() -> None:
    a, b = crypto.new_x25519(), crypto.new_x25519()
    assert crypto.agree(a, crypto.raw_public(b)) == crypto.agree(b, crypto.raw_public(a))
    assert crypto.agree(crypto.raw_private(a), crypto.raw_public(b)) == crypto.agree(
        a, crypto.raw_public(b)
    )
    assert crypto.public_of(crypto.raw_private(a)) == crypto.raw_public(a)


def test_tampered_or_misrouted_share_ciphertexts_are_rejected() -> None:
    shared = os.urandom(32)
    sealed = crypto.seal_share(shared, CTX, 1, 2, b"secret shares")
    assert crypto.open_share(shared, CTX, 1, 2, sealed) == b"secret shares"
    for i in (0, 12, len(sealed) - 1):  # nonce, body, tag
        bad = bytearray(sealed)
        bad[i] ^= 1
        with pytest.raises(ShareDecryptionError):
            crypto.open_share(shared, CTX, 1, 2, bytes(bad))
    with pytest.raises(ShareDecryptionError):  # relabelled receiver
        crypto.open_share(shared, CTX, 1, 3, sealed)
    with pytest.raises(ShareDecryptionError):  # the reverse direction has its own key
        crypto.open_share(shared, CTX, 2, 1, sealed)
    with pytest.raises(ShareDecryptionError):  # replayed into another round
        crypto.open_share(shared, round_context("run", 8), 1, 2, sealed)
    with pytest.raises(ShareDecryptionError):
        crypto.open_share(shared, CTX, 1, 2, sealed[:20])


def test_advertised_keys_verify_only_under_the_enrolled_identity() -> None:
    me, server = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    enc, msk = os.urandom(32), os.urandom(32)
    sig = crypto.sign_keys(me, CTX, 5, enc, msk)
    crypto.verify_keys(
        me.public_key(), CTX, client=5, enc_public=enc, mask_public=msk, signature=sig
    )
    forged = crypto.sign_keys(server, CTX, 5, enc, msk)
    cases = [
        {"client": 5, "enc_public": enc, "mask_public": msk, "signature": forged},
        {"client": 5, "enc_public": enc, "mask_public": os.urandom(32), "signature": sig},
        {"client": 5, "enc_public": os.urandom(32), "mask_public": msk, "signature": sig},
        {"client": 6, "enc_public": enc, "mask_public": msk, "signature": sig},
        {"client": 5, "enc_public": enc[:31], "mask_public": msk, "signature": sig},
    ]
    for case in cases:
        with pytest.raises(KeyVerificationError):
            crypto.verify_keys(me.public_key(), CTX, **case)  # type: ignore[arg-type]
    with pytest.raises(KeyVerificationError):
        crypto.verify_keys(
            me.public_key(),
            round_context("run", 8),
            client=5,
            enc_public=enc,
            mask_public=msk,
            signature=sig,
        )
