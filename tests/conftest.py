"""Shared fixtures: a session cache holding the tiny model, fresh bundles, the chatterbot corpus."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedft.runtime.data import Example, load_chatterbot
from fedft.runtime.models import TINY_VERSION, ModelBundle, load_model


@contextlib.contextmanager
def fedft_cache(folder: Path) -> Iterator[None]:
    """Point ``FEDFT_CACHE`` at ``folder`` for the duration of the block, then restore it.

    The variable is set only around model loads so that tests which rely on the default cache
    (the SmolLM2 conversion, other test modules) never see the session folder.
    """
    saved = os.environ.get("FEDFT_CACHE")
    os.environ["FEDFT_CACHE"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["FEDFT_CACHE"]
        else:
            os.environ["FEDFT_CACHE"] = saved


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide fedft cache folder in which the tiny preset is built once."""
    folder = tmp_path_factory.mktemp("fedft-cache")
    with fedft_cache(folder):
        load_model("tiny")
    assert (folder / "models" / TINY_VERSION / "config.json").is_file()
    return folder


@pytest.fixture
def tiny_bundle(tiny_cache: Path) -> Callable[[], ModelBundle]:
    """Return a factory of FRESH tiny bundles (LoRA injection mutates a bundle's model)."""

    def make() -> ModelBundle:
        with fedft_cache(tiny_cache):
            return load_model("tiny")

    return make


@pytest.fixture(scope="session")
def _chatterbot() -> tuple[Example, ...]:
    return tuple(load_chatterbot())


@pytest.fixture
def chatterbot_examples(_chatterbot: tuple[Example, ...]) -> list[Example]:
    """The embedded chatterbot corpus (a fresh list; the examples themselves are frozen)."""
    return list(_chatterbot)


@pytest.fixture
def assert_virtual_clock() -> Callable[[dict[str, dict[str, Any]]], None]:
    """Check a round's per-client records against the virtual clock of ``--device-mix``."""
    from fedft.core.device import TIERS

    def check(clients: dict[str, dict[str, Any]]) -> None:
        # seconds = CPU time x slowdown + the client's own task bytes (down and up) over its link
        for c in clients.values():
            tier = TIERS[c["tier"]]
            expected = c["cpu_seconds"] * tier.slowdown + c["bytes"] * 8 / (tier.link_mbps * 1e6)
            assert c["seconds"] == pytest.approx(expected, abs=1e-4)
            assert c["seconds"] > 0

    return check
