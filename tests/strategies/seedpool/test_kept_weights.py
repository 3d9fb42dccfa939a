"""Synced weights kept through local steps come back bit for bit, from memory or from disk."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from fedft.kernels.seed_ops import FlatParams
from fedft.strategies.seedpool import kept_weights as module
from fedft.strategies.seedpool.kept_weights import kept_weights, on_disk


def params() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"b": torch.randn(7, generator=gen), "a": torch.randn(3, 5, generator=gen)}


def test_snapshot_is_the_layout_order_copy() -> None:
    named = params()
    flat = FlatParams(named)
    snap = flat.snapshot()
    assert torch.equal(snap, torch.cat([named["a"].view(-1), named["b"]]))  # sorted by name
    named["a"].add_(1.0)
    assert not torch.equal(snap[:15], named["a"].view(-1))  # a copy, not a view


def test_write_to_and_read_from_round_trip_bit_for_bit() -> None:
    named = params()
    before = {k: v.clone() for k, v in named.items()}
    flat = FlatParams(named)
    file = io.BytesIO()
    flat.write_to(file)
    assert len(file.getvalue()) == 4 * flat.total
    for tensor in named.values():
        tensor.mul_(3.0).add_(0.1)
    flat.read_from(file)
    assert all(torch.equal(named[k], before[k]) for k in named)
    with pytest.raises(ValueError, match="ended early"):
        flat.read_from(io.BytesIO(file.getvalue()[:-4]))


@pytest.mark.parametrize("threshold", [0, 1 << 30], ids=["disk", "memory"])
def test_kept_weights_restores_exactly(
    threshold: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(module, "DISK_MIN_VALUES", threshold)
    monkeypatch.setenv("FEDFT_CACHE", str(tmp_path))
    named = params()
    before = {k: v.clone() for k, v in named.items()}
    flat = FlatParams(named)
    assert on_disk(flat) == (threshold == 0)
    with kept_weights(flat) as restore:
        for tensor in named.values():
            tensor.add_(torch.full_like(tensor, 1e-3))  # what perturbation passes do
        if threshold == 0:
            assert len(list((tmp_path / "scratch").iterdir())) <= 1  # an unnamed temp file
        restore()
        assert all(torch.equal(named[k], before[k]) for k in named)
    assert not list((tmp_path / "scratch").glob("weights-*"))


def test_empty_sets_stay_in_memory() -> None:
    assert not on_disk(FlatParams({}))
