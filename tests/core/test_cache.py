"""fedft's cache folder: $FEDFT_CACHE, else ~/.cache/fedft."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedft.core.cache import cache_dir


def test_cache_dir_follows_fedft_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDFT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.setenv("FEDFT_CACHE", "")  # empty counts as unset
    assert cache_dir() == Path.home() / ".cache" / "fedft"
    monkeypatch.delenv("FEDFT_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "fedft"
