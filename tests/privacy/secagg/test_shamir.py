"""Shamir sharing over GF(2^521 - 1): any t shares rebuild, fewer do not."""

from __future__ import annotations

import itertools
import os

import pytest

from fedft.privacy.secagg import shamir


def test_any_threshold_subset_rebuilds_the_secret() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, [0, 3, 4, 9, 17], 3)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares.values())
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine({h: shares[h] for h in subset}, 3) == secret


def test_fewer_shares_than_threshold_do_not_rebuild() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, [1, 2, 3, 4], 3)
    with pytest.raises(ValueError, match="need 3 shares"):
        shamir.combine({1: shares[1], 2: shares[2]}, 3)
    # Treating two shares as a 2-of-n sharing gives some other value, not the secret.
    try:
        wrong = shamir.combine({1: shares[1], 2: shares[2]}, 2)
    except ValueError:  # the interpolated value does not even fit 32 bytes
        return
    assert wrong != secret


def test_edge_secrets_and_bad_arguments() -> None:
    for secret in (bytes(32), b"\xff" * 32):
        shares = shamir.split(secret, [0, 1], 2)
        assert shamir.combine(shares, 2) == secret
    with pytest.raises(ValueError, match="32 bytes"):
        shamir.split(bytes(16), [0, 1], 2)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(bytes(32), [0, 1], 3)
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(bytes(32), [1, 1], 2)
