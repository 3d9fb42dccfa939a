r"""Client identity: Ed25519 keys, signed gRPC requests, replay protection and enrollment tokens.

Every RPC after enrollment carries four metadata headers:

    fedft-client-id   the enrolled client id
    fedft-timestamp   Unix time in integer milliseconds
    fedft-nonce       16 random bytes, 32 lowercase hex digits
    fedft-signature   Ed25519 signature, 128 lowercase hex digits

The signature covers the canonical signing string: five fields joined by a single ``\n``, no
trailing newline, UTF-8 encoded (all fields are in fact ASCII)::

    "fedft-sig-v1" \n METHOD \n CLIENT_ID \n TIMESTAMP \n NONCE

where METHOD is the full gRPC method name as the server sees it (``/package.Service/Method``)
and the other three are the header values exactly as sent. Example::

    fedft-sig-v1\n/fedft.proto.v1.Coordinator/Join\nedge-1\n1750000000000\n000102...0e0f

No field may contain a newline (the builder refuses), so the string parses back uniquely and
one signature can never be re-read as covering other fields. TLS protects message bodies; the
signature proves possession of the enrolled key on every call, and the nonce, remembered for the
skew window by :class:`NonceCache`, makes each signed call usable once.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedft.core.errors import FedftError, UsageError

SIGNATURE_VERSION = "fedft-sig-v1"
HEADER_CLIENT_ID = "fedft-client-id"
HEADER_TIMESTAMP = "fedft-timestamp"
HEADER_NONCE = "fedft-nonce"
HEADER_SIGNATURE = "fedft-signature"
HEADERS = (HEADER_CLIENT_ID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

DEFAULT_SKEW = 300.0
NONCE_BYTES = 16
TOKEN_PREFIX = "fedft_"

# gRPC text metadata values are printable ASCII; a client id must also survive that trip.
_CLIENT_ID = re.compile(r"[\x21-\x7e]{1,256}")
# Canonical decimal only (no sign, no leading zeros), so one request has one spelling; at most
# 15 digits: beyond year 9999 in ms, and well inside a float's exact integer range.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,14}")
_NONCE = re.compile(rf"[0-9a-f]{{{2 * NONCE_BYTES}}}")
_SIGNATURE = re.compile(r"[0-9a-f]{128}")


class AuthError(FedftError):
    """A request failed authentication; ``reason`` is a short, stable, client-safe phrase."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# --- keys ------------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """Generate a fresh Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """Return the raw 32-byte public key of a private or public Ed25519 key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte Ed25519 public key; raises ValueError if it is not one."""
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(bytes(raw))


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` via a temp file and rename, with ``mode`` set before any byte.

    A reader sees the old file or the complete new one, never a partial one, and a secret is
    never readable by others even for an instant (mkstemp creates the file as 0600).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_private_key(path: str | os.PathLike[str], key: Ed25519PrivateKey) -> None:
    """Write the key as unencrypted PKCS#8 PEM, atomically, with mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, pem, mode=0o600)


def check_private_permissions(path: str | os.PathLike[str]) -> None:
    """Raise UsageError if a private file grants any access to group or others (like ssh)."""
    if os.name == "nt":  # POSIX mode bits mean nothing there; ACLs are out of scope
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise UsageError(
            f"private key {path} is accessible by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load a PEM Ed25519 private key, refusing one that group or others may read."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"private key {p} does not exist")
    check_private_permissions(p)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{p} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{p} holds a {type(key).__name__}, not an Ed25519 key")
    return key


# --- signed requests -------------------------------------------------------------------------


def signing_string(method: str, client_id: str, timestamp_ms: int, nonce_hex: str) -> bytes:
    """Return the canonical bytes that a request signature covers (format in the module doc)."""
    if not method.startswith("/") or "\n" in method:
        raise ValueError(f"not a full gRPC method name: {method!r}")
    if not _CLIENT_ID.fullmatch(client_id):
        raise ValueError(f"client id must be 1-256 printable ASCII characters: {client_id!r}")
    if timestamp_ms < 0:
        raise ValueError("timestamp must not be negative")
    if not _NONCE.fullmatch(nonce_hex):
        raise ValueError(f"nonce must be {2 * NONCE_BYTES} lowercase hex digits")
    fields = (SIGNATURE_VERSION, method, client_id, str(timestamp_ms), nonce_hex)
    return "\n".join(fields).encode("utf-8")


def sign_request(
    private_key: Ed25519PrivateKey,
    method: str,
    client_id: str,
    *,
    now: float | None = None,
    nonce: bytes | None = None,
) -> list[tuple[str, str]]:
    """Sign one call to ``method``; return the metadata pairs to send with it.

    ``now`` is Unix seconds (default: the clock); ``nonce`` is 16 bytes (default: random).
    """
    timestamp_ms = int((time.time() if now is None else now) * 1000)
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    nonce_hex = nonce.hex()
    signature = private_key.sign(signing_string(method, client_id, timestamp_ms, nonce_hex))
    return [
        (HEADER_CLIENT_ID, client_id),
        (HEADER_TIMESTAMP, str(timestamp_ms)),
        (HEADER_NONCE, nonce_hex),
        (HEADER_SIGNATURE, signature.hex()),
    ]


def _header(metadata: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
    value = metadata.get(name)
    if value is None or value == "":
        raise AuthError(f"missing header {name}")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AuthError(f"malformed header {name}")
    return value


def claimed_client_id(metadata: Mapping[str, str]) -> str:
    """Return the (not yet verified) client id a request names, to look up its public key."""
    return _header(metadata, HEADER_CLIENT_ID, _CLIENT_ID)


def verify_request(
    public_key_bytes: bytes,
    method: str,
    metadata: Mapping[str, str],
    *,
    now: float | None = None,
    skew: float = DEFAULT_SKEW,
    nonce_cache: NonceCache | None = None,
    ahead: float | None = None,
) -> str:
    """Verify a signed request's metadata against the client's raw public key.

    ``method`` must be the method the server is actually handling (never a header), so a
    signature for one RPC cannot authorize another. With ``nonce_cache``, a nonce seen before is
    rejected; it is recorded only after the signature verified, so forged requests cannot fill
    the cache. Returns the client id; raises AuthError.
    """
    if nonce_cache is not None and nonce_cache.window < skew:
        # A nonce forgotten while its timestamp is still acceptable could be replayed.
        raise ValueError(f"nonce cache window {nonce_cache.window} s is below the skew {skew} s")
    client_id = claimed_client_id(metadata)
    timestamp = _header(metadata, HEADER_TIMESTAMP, _TIMESTAMP)
    nonce_hex = _header(metadata, HEADER_NONCE, _NONCE)
    signature = _header(metadata, HEADER_SIGNATURE, _SIGNATURE)

    now_s = time.time() if now is None else now
    timestamp_s = int(timestamp) / 1000
    offset = timestamp_s - now_s
    # ``ahead`` (default: ``skew``) bounds how far a timestamp may lead the server clock.
    if offset < -skew or offset > (skew if ahead is None else ahead):
        side = "ahead of" if offset > 0 else "behind"
        raise AuthError(
            "timestamp outside the allowed window",
            f"{abs(offset):.1f} s {side} the server clock, {skew:g} s allowed",
        )

    try:
        key = load_public_key(public_key_bytes)
        message = signing_string(method, client_id, int(timestamp), nonce_hex)
    except ValueError as exc:
        raise AuthError("bad request", str(exc)) from None
    try:
        key.verify(bytes.fromhex(signature), message)
    except InvalidSignature:
        raise AuthError("bad signature") from None

    if nonce_cache is not None and not nonce_cache.check_and_add(
        client_id, nonce_hex, timestamp_s, now_s
    ):
        raise AuthError("replayed nonce")
    return client_id


@dataclass
class _ClientWindow:
    seen: set[str] = field(default_factory=set)
    by_time: list[tuple[float, str]] = field(default_factory=list)  # min-heap on timestamp
    floor: float = float("-inf")


class NonceCache:
    """Remembers each client's nonces for ``window`` seconds, thread-safe and bounded per client.

    Every client has its own window: when one reaches ``max_entries``, its oldest entry is
    evicted early and that timestamp becomes a floor *for that client only* (requests stamped at
    or before it are refused), so one client flooding signed calls cannot push another's nonces
    out or lock it out (defect 2). ``floor`` applies to everyone: a server sets it to its start
    time plus the largest accepted clock lead, which is after every timestamp it accepted before
    a restart, so no call seen by an earlier process can be replayed to this one (defect 8).
    """

    def __init__(
        self,
        window: float = DEFAULT_SKEW,
        max_entries: int = 4096,
        *,
        floor: float = float("-inf"),
    ) -> None:
        if window <= 0 or max_entries < 1:
            raise ValueError("window must be positive and max_entries at least 1")
        self.window = window
        self.max_entries = max_entries
        self.floor = floor
        self._lock = threading.Lock()
        self._clients: dict[str, _ClientWindow] = {}
        self._horizon = float("-inf")

    def __len__(self) -> int:
        with self._lock:  # entries past the window are dropped lazily; they do not count
            return sum(
                1 for w in self._clients.values() for t, _ in w.by_time if t >= self._horizon
            )

    def check_and_add(self, client_id: str, nonce: str, timestamp: float, now: float) -> bool:
        """Record a nonce; return False if it was seen (or cannot be told apart from a replay).

        ``timestamp`` (the request's) and ``now`` are Unix seconds.
        """
        with self._lock:
            horizon = now - self.window
            self._horizon = max(self._horizon, horizon)
            if timestamp < horizon or timestamp <= self.floor:
                return False
            client = self._clients.setdefault(client_id, _ClientWindow())
            while client.by_time and client.by_time[0][0] < horizon:
                client.seen.discard(heapq.heappop(client.by_time)[1])
            if timestamp <= client.floor or nonce in client.seen:
                return False
            while len(client.seen) >= self.max_entries:
                oldest, gone = heapq.heappop(client.by_time)
                client.seen.discard(gone)
                client.floor = max(client.floor, oldest)
            if timestamp <= client.floor:
                return False  # this request is itself the oldest: refused like the evicted ones
            client.seen.add(nonce)
            heapq.heappush(client.by_time, (timestamp, nonce))
            return True


# --- enrollment tokens -----------------------------------------------------------------------


def new_token() -> str:
    """Return a fresh one-time enrollment token (``fedft_`` + 32 URL-safe characters)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """Return the SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.strip().encode("utf-8")).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    """Compare a presented token with a stored digest in constant time."""
    return hmac.compare_digest(hash_token(token), token_hash.lower())
