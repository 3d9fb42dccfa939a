"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1), for 32-byte secrets.

p = 2^521 - 1 is the Mersenne prime M521 (the field of NIST P-521). It exceeds 2^256, so a whole
32-byte secret (a ChaCha20 seed or an X25519 private key) is one field element: no chunking,
and each share is one element, serialised as 66 big-endian bytes. Coefficients come from
``secrets`` (the OS CSPRNG), so any t - 1 shares are uniformly distributed and reveal nothing.
Share x-coordinates are holder ids plus one (never zero, where the secret sits).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

PRIME = (1 << 521) - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


def split(secret: bytes, holders: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Split a 32-byte secret into one share per holder id; any ``threshold`` rebuild it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold {threshold} must lie in [1, {len(holders)}]")
    if len(set(holders)) != len(holders) or min(holders) < 0:
        raise ValueError("holder ids must be distinct and non-negative")
    coeffs = [int.from_bytes(secret, "big")]
    coeffs += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, bytes] = {}
    for holder in holders:
        x = holder + 1
        y = 0
        for c in reversed(coeffs):  # Horner's rule
            y = (y * x + c) % PRIME
        shares[holder] = y.to_bytes(SHARE_BYTES, "big")
    return shares


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Rebuild the secret from at least ``threshold`` shares keyed by holder id (Lagrange at 0).

    Uses the ``threshold`` smallest holder ids. Wrong shares give a wrong secret, not an error;
    callers check the result where they can (a private key against its public key).
    """
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    points = [(h + 1, int.from_bytes(shares[h], "big")) for h in sorted(shares)[:threshold]]
    if any(y >= PRIME for _, y in points):
        raise ValueError("a share is not a field element")
    secret = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ValueError("the shares do not rebuild a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")
