"""Fetch the base-model checkpoint from the coordinator when the edge device has none."""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath

from fedft.client.connection import Connection
from fedft.core.cache import cache_dir
from fedft.core.errors import ProtocolError


def fetch_model(connection: Connection) -> str:
    """Download the coordinator's model files once into the cache; return the folder path.

    The folder is named after the manifest's digest, so a changed model is a new folder and an
    unchanged one is never downloaded twice. Files already present with the right size are kept,
    which resumes an interrupted download.
    """
    manifest = connection.download("model/manifest")
    folder = cache_dir() / "models" / f"server-{hashlib.sha256(manifest).hexdigest()[:16]}"
    try:
        files = json.loads(manifest)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"the coordinator sent a malformed model manifest: {exc}") from None
    for entry in files:
        relative = PurePosixPath(str(entry["path"]))
        # The manifest comes from the network: never let it write outside our folder.
        if relative.is_absolute() or ".." in relative.parts:
            raise ProtocolError(f"refusing model file path {relative}")
        target = folder.joinpath(*relative.parts)
        if target.exists() and target.stat().st_size == int(entry["size"]):
            continue
        connection.download_to(f"model/{relative}", target)
    return str(folder)
