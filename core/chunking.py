"""Cut serialized payloads into bounded chunks and put them back together, verified."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from fedft.core.errors import ProtocolError

# Well under gRPC's default 4 MiB message cap, large enough that per-message overhead is noise.
DEFAULT_CHUNK_BYTES = 1 << 20


def iter_chunks(
    data: bytes | memoryview, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[bytes]:
    """Yield consecutive slices of ``data`` of at most ``chunk_bytes`` (none for empty data)."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    view = memoryview(data)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


def sha256(data: bytes | memoryview) -> bytes:
    """Return the SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


class Reassembler:
    """Collects the chunks of one announced payload and checks its size and digest.

    The announced size is checked against ``max_bytes`` before anything is buffered, and every
    chunk against the announced size, so a peer cannot make us hold more than it declared.
    """

    def __init__(self, size: int, digest: bytes, *, max_bytes: int):
        if size < 0:
            raise ProtocolError(f"announced size {size} is negative")
        if size > max_bytes:
            raise ProtocolError(f"announced size {size} bytes exceeds the limit of {max_bytes}")
        if len(digest) != hashlib.sha256().digest_size:
            raise ProtocolError("the SHA-256 digest must be 32 bytes")
        self.size = size
        self.digest = digest
        self._buffer = bytearray()
        self._hash = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        """Append one chunk; raise ProtocolError if it goes past the announced size."""
        if len(self._buffer) + len(chunk) > self.size:
            raise ProtocolError(f"received more than the announced {self.size} bytes")
        self._buffer += chunk
        self._hash.update(chunk)

    def finish(self) -> bytes:
        """Return the payload bytes once complete and intact; raise ProtocolError otherwise."""
        if len(self._buffer) != self.size:
            raise ProtocolError(f"received {len(self._buffer)} of the announced {self.size} bytes")
        if self._hash.digest() != self.digest:
            raise ProtocolError("payload bytes do not match their SHA-256 digest")
        return bytes(self._buffer)
