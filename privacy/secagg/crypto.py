"""Cryptographic primitives of the protocol, all from the ``cryptography`` library.

- Key agreement: X25519. Every derived key goes through HKDF-SHA256 with an ``info`` string
  that binds the purpose, the round context and both client ids, so no key is reused across
  purposes, rounds or pairs.
- Mask generator: the ChaCha20 keystream (zero nonce: each derived key is used for exactly one
  stream). The ring modulus is a power of two, so taking 4 or 8 keystream bytes per element
  gives uniform ring elements with no bias and no rejection.
- Share transport: ChaCha20-Poly1305 under a per-direction key, a random 96-bit nonce, and
  associated data binding sender, receiver and round.
- Key authenticity: each advertised key pair is signed with the client's enrolled Ed25519
  identity (the key of ``fedft.core.identity``) over a domain-separated string.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from .errors import KeyVerificationError, ShareDecryptionError
from .graph import DOMAIN

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64


def _ids(*ids: int) -> bytes:
    return b"".join(struct.pack(">I", i) for i in ids)


def hkdf(secret: bytes, purpose: bytes, context: bytes, *ids: int) -> bytes:
    """Derive a 32-byte key: HKDF-SHA256, info = domain | purpose | context | ids (4 bytes each)."""
    info = DOMAIN + b"|" + purpose + b"|" + context + _ids(*ids)
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=info).derive(secret)


def new_x25519() -> X25519PrivateKey:
    """Generate a fresh X25519 private key (one per purpose per round)."""
    return X25519PrivateKey.generate()


def raw_public(key: X25519PrivateKey) -> bytes:
    """Return the 32-byte raw public key of an X25519 private key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_of(raw: bytes) -> bytes:
    """Return the raw public key of a raw X25519 private key (to check a rebuilt key)."""
    return raw_public(X25519PrivateKey.from_private_bytes(raw))


def raw_private(key: X25519PrivateKey) -> bytes:
    """Return the 32 raw bytes of an X25519 private key (to secret-share it)."""
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def agree(private: X25519PrivateKey | bytes, peer_public: bytes) -> bytes:
    """Return the X25519 secret of a private key (object or raw bytes) and a raw public key."""
    key = X25519PrivateKey.from_private_bytes(private) if isinstance(private, bytes) else private
    return key.exchange(X25519PublicKey.from_public_bytes(peer_public))


def pair_mask_key(shared: bytes, context: bytes, a: int, b: int) -> bytes:
    """Return the pairwise mask key of clients ``a`` and ``b`` (symmetric: ids are sorted)."""
    return hkdf(shared, b"pair-mask", context, min(a, b), max(a, b))


def self_mask_key(seed: bytes, context: bytes, client: int) -> bytes:
    """Return the self-mask key that a client's 32-byte seed expands to."""
    return hkdf(seed, b"self-mask", context, client)


def mask(key: bytes, length: int, ring_bits: int) -> NDArray[np.unsignedinteger]:
    """Expand a 32-byte key into ``length`` uniform elements of the ring Z/2^ring_bits."""
    if ring_bits not in (32, 64):
        raise ValueError(f"ring_bits must be 32 or 64, got {ring_bits}")
    dtype: np.dtype[np.unsignedinteger[Any]] = np.dtype("<u4" if ring_bits == 32 else "<u8")
    nbytes = length * dtype.itemsize
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    # The keystream XOR zeros is the keystream itself; one call, then a zero-copy view.
    return np.frombuffer(stream.update(bytes(nbytes)), dtype=dtype)


def _share_aad(context: bytes, sender: int, receiver: int) -> bytes:
    return DOMAIN + b"|share|" + context + _ids(sender, receiver)


def seal_share(shared: bytes, context: bytes, sender: int, receiver: int, plain: bytes) -> bytes:
    """Encrypt a share bundle from ``sender`` to ``receiver``: nonce || ciphertext || tag."""
    key = hkdf(shared, b"share-enc", context, sender, receiver)
    nonce = os.urandom(NONCE_BYTES)
    aad = _share_aad(context, sender, receiver)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plain, aad)


def open_share(shared: bytes, context: bytes, sender: int, receiver: int, sealed: bytes) -> bytes:
    """Decrypt a share bundle; raises ShareDecryptionError if anything was altered or misrouted."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise ShareDecryptionError(f"share from {sender} to {receiver} is truncated")
    key = hkdf(shared, b"share-enc", context, sender, receiver)
    aad = _share_aad(context, sender, receiver)
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ShareDecryptionError(
            f"share from {sender} to {receiver} failed authentication"
        ) from None


def key_statement(context: bytes, client: int, enc_public: bytes, mask_public: bytes) -> bytes:
    """Return the bytes a client signs when it advertises its two public keys for a round."""
    return DOMAIN + b"|advertise|" + context + _ids(client) + enc_public + mask_public


def sign_keys(
    identity: Ed25519PrivateKey, context: bytes, client: int, enc_public: bytes, mask_public: bytes
) -> bytes:
    """Sign an advertisement with the client's enrolled Ed25519 identity key."""
    return identity.sign(key_statement(context, client, enc_public, mask_public))


def verify_keys(
    identity: Ed25519PublicKey,
    context: bytes,
    *,
    client: int,
    enc_public: bytes,
    mask_public: bytes,
    signature: bytes,
) -> None:
    """Check an advertisement's signature; raises KeyVerificationError if it does not verify."""
    if len(enc_public) != KEY_BYTES or len(mask_public) != KEY_BYTES:
        raise KeyVerificationError(f"client {client} advertised a malformed key")
    try:
        identity.verify(signature, key_statement(context, client, enc_public, mask_public))
    except InvalidSignature:
        raise KeyVerificationError(
            f"keys advertised for client {client} are not signed by its enrolled identity"
        ) from None
