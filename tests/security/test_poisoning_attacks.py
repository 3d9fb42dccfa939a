"""Poisoning by an enrolled client: out-of-range values, inflated weights, oversized updates."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import torch

from fedft.server.state.memory import InMemoryState

from .conftest import Target, adapter, make_target, update_bytes


def refused(call: object) -> grpc.StatusCode:
    """The status a refused call ended with."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()  # type: ignore[no-any-return]


def test_float64_values_beyond_float32_are_refused(target: Target) -> None:
    """Defect 3: 1e300 in float64 passed the finiteness check and made the model +inf."""
    a, b = target.enrolled("edge-a"), target.enrolled("edge-b")
    task, _ = a.fetch()
    huge = {name: torch.full_like(t, 1e300, dtype=torch.float64) for name, t in adapter().items()}
    assert refused(lambda: a.submit(task, update_bytes(huge))) == grpc.StatusCode.INVALID_ARGUMENT
    assert target.state.updates_for_round(task.round) == []
    del b


@pytest.mark.parametrize(("enrolled", "claimed"), [(10, 11), (10, 2**62), (0, 2**62)])
def test_num_examples_is_capped(target: Target, enrolled: int, claimed: int) -> None:
    """Defect 4: a claimed 2^62 examples made one client's update the global model."""
    a, b = target.enrolled("edge-a", enrolled), target.enrolled("edge-b")
    task, _ = a.fetch()
    poisoned = update_bytes(adapter(5), num_examples=claimed)
    assert refused(lambda: a.submit(task, poisoned)) == grpc.StatusCode.INVALID_ARGUMENT
    a.submit(task, update_bytes(adapter(5), num_examples=min(enrolled or 10, 10)))
    del b


def test_update_norm_bound(certs: Path) -> None:
    target = make_target(certs, InMemoryState(), max_update_norm=10.0)
    try:
        a, b = target.enrolled("edge-a"), target.enrolled("edge-b")
        task, _ = a.fetch()
        scaled = {n: t * 1e6 for n, t in adapter().items()}
        assert refused(lambda: a.submit(task, update_bytes(scaled))) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        nudged = {n: t + 0.01 for n, t in adapter().items()}
        a.submit(task, update_bytes(nudged))
        del b
    finally:
        target.stop()
