"""Where fedft keeps what it builds once per machine: models, compiled kernels, scratch."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return fedft's cache folder (``$FEDFT_CACHE``, else ``~/.cache/fedft``)."""
    root = os.environ.get("FEDFT_CACHE") or Path.home() / ".cache" / "fedft"
    return Path(root).expanduser()
