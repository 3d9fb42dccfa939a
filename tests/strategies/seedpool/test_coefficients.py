"""Tests for the server's versioned coefficient store: deltas per client, pruning, checkpoints."""

from __future__ import annotations

import pytest
import torch

from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.strategies.seedpool.coefficients import CoefficientStore

SHAPE = (4, 3)


def added(seed: int) -> torch.Tensor:
    # Values with full float64 mantissas, so that a float32 detour anywhere would show.
    return torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_new_store_is_version_zero_of_zeros() -> None:
    store = CoefficientStore(SHAPE)
    assert store.shape == SHAPE
    assert store.version == 0
    assert store.current.dtype == torch.float64
    assert torch.equal(store.current, torch.zeros(SHAPE, dtype=torch.float64))
    base, delta = store.delta_for("anyone")
    assert base == 0
    assert torch.equal(delta, torch.zeros(SHAPE, dtype=torch.float64))


def test_never_seen_client_gets_everything_from_version_zero() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 1)
    store.commit(added(2), 2)
    base, delta = store.delta_for("new")
    assert base == 0
    assert torch.equal(delta, store.current)
    torch.testing.assert_close(delta, added(1) + added(2), rtol=0, atol=1e-15)


def test_synced_client_gets_only_what_changed_since_its_version() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 1)
    v1 = store.current.clone()
    store.record_sync("a", 1)
    store.commit(added(2), 2)
    base, delta = store.delta_for("a")
    assert base == 1
    assert torch.equal(delta, store.current - v1)
    assert torch.equal(store.current, added(1) + added(2))
    torch.testing.assert_close(delta, added(2), rtol=0, atol=1e-15)
    # At the current version the delta is zero.
    store.record_sync("a", 2)
    base, delta = store.delta_for("a")
    assert base == 2
    assert not delta.any()


def test_commit_accepts_float32_additions_in_float64() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(3).to(torch.float32), 1)
    assert store.current.dtype == torch.float64
    assert torch.equal(store.current, added(3).to(torch.float32).to(torch.float64))


def test_commit_needs_increasing_versions() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 5)
    for version in (5, 4, 0):
        with pytest.raises(ValueError, match="not after"):
            store.commit(added(2), version)
    assert store.version == 5


def test_unknown_versions_are_ignored_by_record_sync() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 1)
    store.record_sync("a", 1)
    store.record_sync("a", 7)  # never committed
    assert store.synced == {"a": 1}
    store.commit(added(2), 2)
    store.commit(added(3), 3)
    store.record_sync("b", 2)  # pruned: nobody referenced it when 3 was committed
    assert "b" not in store.synced
    assert store.delta_for("b")[0] == 0
    store.record_sync("b", 0)  # version 0 is always known
    assert store.synced["b"] == 0


def test_pruning_keeps_only_referenced_snapshots() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 1)
    store.record_sync("a", 1)
    store.commit(added(2), 2)
    store.commit(added(3), 3)
    assert set(store.snapshots) == {1, 3}  # 2 is held by nobody
    assert store.holds(1)
    assert not store.holds(2)
    assert store.holds(0)
    assert store.holds(3)
    store.record_sync("b", 3)
    store.record_sync("a", 3)
    store.commit(added(4), 4)
    assert set(store.snapshots) == {3, 4}
    base, delta = store.delta_for("a")
    assert base == 3
    torch.testing.assert_close(delta, added(4), rtol=0, atol=1e-15)
    # Snapshots are values, not views of the moving current.
    expected3 = added(1) + added(2) + added(3)
    torch.testing.assert_close(store.at(3), expected3, rtol=0, atol=1e-15)


def test_at_returns_each_held_version() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 1)
    store.record_sync("a", 1)
    store.commit(added(2), 2)
    assert torch.equal(store.at(0), torch.zeros(SHAPE, dtype=torch.float64))
    assert torch.equal(store.at(1), added(1))
    assert torch.equal(store.at(2), store.current)


def filled_store() -> CoefficientStore:
    store = CoefficientStore(SHAPE)
    store.commit(added(1), 1)
    store.record_sync("client-b", 1)
    store.commit(added(2), 2)
    store.record_sync("client-a", 2)
    store.record_sync("client-c", 0)
    store.commit(added(3), 3)
    return store


def test_checkpoint_roundtrips_through_the_wire_format() -> None:
    store = filled_store()
    assert set(store.snapshots) == {1, 2, 3}
    back = CoefficientStore.from_payload(payload_from_bytes(payload_to_bytes(store.to_payload())))
    assert back.shape == SHAPE
    assert back.version == 3
    assert back.current.dtype == torch.float64
    assert torch.equal(back.current, store.current)
    assert set(back.snapshots) == set(store.snapshots)
    for version, snap in store.snapshots.items():
        assert torch.equal(back.snapshots[version], snap)
    assert back.synced == store.synced == {"client-a": 2, "client-b": 1, "client-c": 0}
    for client in ("client-a", "client-b", "client-c", "new"):
        base, delta = store.delta_for(client)
        back_base, back_delta = back.delta_for(client)
        assert back_base == base
        assert torch.equal(back_delta, delta)
    # The restored store goes on like the original.
    store.commit(added(4), 4)
    back.commit(added(4), 4)
    assert torch.equal(back.current, store.current)
    assert set(back.snapshots) == set(store.snapshots)


def test_checkpoint_is_a_copy() -> None:
    store = filled_store()
    payload = store.to_payload()
    payload.tensors["coeffs"].add_(1.0)
    assert not torch.equal(store.current, payload.tensors["coeffs"])
    back = CoefficientStore.from_payload(store.to_payload())
    back.current.add_(1.0)
    assert not torch.equal(store.current, back.current)


def test_checkpoint_of_a_store_nobody_synced() -> None:
    store = CoefficientStore(SHAPE)
    store.commit(added(5), 1)
    back = CoefficientStore.from_payload(payload_from_bytes(payload_to_bytes(store.to_payload())))
    assert back.version == 1
    assert back.synced == {}
    assert torch.equal(back.current, store.current)
    assert back.delta_for("x")[0] == 0
