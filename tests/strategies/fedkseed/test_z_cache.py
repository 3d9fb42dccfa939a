"""FedKSeed keeps z between a step's perturbations only for small trainable sets on the CPU."""

from __future__ import annotations

import pytest
import torch

import fedft.strategies.fedkseed.client as client_module
from fedft.kernels.seed_ops import FlatParams
from fedft.strategies.fedkseed.client import caches_z


def test_small_cpu_sets_cache_z() -> None:
    assert caches_z(FlatParams({"w": torch.zeros(10)}))


def test_large_sets_and_empty_sets_regenerate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "CACHE_LIMIT", 9)
    assert not caches_z(FlatParams({"w": torch.zeros(10)}))
    assert not caches_z(FlatParams({}))


def test_sets_off_the_cpu_regenerate() -> None:
    # Any non-CPU device takes the regenerating path; "meta" stands in for CUDA here.
    assert not caches_z(FlatParams({"w": torch.zeros(10, device="meta")}))
