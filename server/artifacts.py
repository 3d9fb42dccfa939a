"""Serve the files of the base-model checkpoint to clients that do not have the model."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

from fedft.core.chunking import DEFAULT_CHUNK_BYTES

MANIFEST = "manifest"


class ModelArtifacts:
    """A checkpoint folder exposed as ``manifest`` plus one artifact per file.

    Only files listed in the manifest can be opened, so a request cannot reach outside the
    folder. Digests are computed once, on first use: hashing a large checkpoint takes seconds.
    """

    def __init__(self, folder: Path, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.folder = folder
        self.chunk_bytes = chunk_bytes
        self._manifest: bytes | None = None
        self._lock = threading.Lock()

    def manifest(self) -> bytes:
        """Return the JSON manifest: every file's relative path, size and SHA-256."""
        with self._lock:
            if self._manifest is None:
                files = []
                for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
                    digest = hashlib.sha256()
                    with path.open("rb") as handle:
                        while block := handle.read(1 << 20):
                            digest.update(block)
                    files.append(
                        {
                            "path": path.relative_to(self.folder).as_posix(),
                            "size": path.stat().st_size,
                            "sha256": digest.hexdigest(),
                        }
                    )
                self._manifest = json.dumps({"files": files}, sort_keys=True).encode()
            return self._manifest

    def open(self, name: str) -> tuple[int, bytes, Iterator[bytes]] | None:
        """Return (size, sha256, chunk iterator) of the manifest or a listed file, else None."""
        if name == MANIFEST:
            data = self.manifest()
            chunks = (data[i : i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes))
            return len(data), hashlib.sha256(data).digest(), chunks
        entries = {f["path"]: f for f in json.loads(self.manifest())["files"]}
        entry = entries.get(name)
        if entry is None:
            return None
        return entry["size"], bytes.fromhex(entry["sha256"]), self._read(self.folder / name)

    def _read(self, path: Path) -> Iterator[bytes]:
        with path.open("rb") as handle:
            while block := handle.read(self.chunk_bytes):
                yield block
