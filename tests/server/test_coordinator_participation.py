"""The coordinator with --participation fedau: 1/p weights, estimates kept across restarts."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from fedft.server.coordinator import Coordinator
from fedft.server.state.records import ROUND_DONE
from fedft.strategies.participation import FedAUServer
from tests.server.test_coordinator import (
    INITIAL,
    SEED,
    FakeClock,
    Make,
    adapter,
    enroll,
    must_fetch,
    step,
    update,
)


@pytest.fixture
def make(make_coordinator: Make) -> Make:
    """Four rounds that one client is enough to run, as FedAU's partial participation needs."""
    return partial(
        make_coordinator,
        seed=SEED,
        initial=INITIAL,
        rounds=4,
        round_timeout_s=60.0,
        min_clients=1,
        liveness_s=30.0,
    )


def one_round(coordinator: Coordinator, clock: FakeClock, present: list[str], number: int) -> None:
    """A round where only ``present`` clients are alive (the others stay silent past liveness)."""
    for client_id in present:
        coordinator.heartbeat(client_id)
    assert step(coordinator)
    for client_id in present:
        task = must_fetch(coordinator, client_id).task
        coordinator.submit(client_id, task.task_id, number, update(adapter(number)))
    assert step(coordinator)
    done = coordinator.state.get_round(number)
    assert done is not None
    assert done.status == ROUND_DONE
    clock.advance(31.0)  # everyone's liveness lapses before the next round


def test_a_restarted_coordinator_keeps_the_fedau_estimates(make: Make, tmp_path: Path) -> None:
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = make(url, clock, participation="fedau")
    assert isinstance(first.server_half, FedAUServer)
    enroll(first, "edge-a")
    enroll(first, "edge-b")
    clock.advance(31.0)
    one_round(first, clock, ["edge-a", "edge-b"], 1)
    one_round(first, clock, ["edge-a"], 2)
    one_round(first, clock, ["edge-a", "edge-b"], 3)
    weights = first.server_half.weights()
    # edge-b took part in rounds 1 and 3: intervals 1 and 2, so its next weight is 1.5.
    assert weights == {"edge-a": 1.0, "edge-b": 1.5}
    first.state.close()

    second = make(url, clock, participation="none")  # restarted without the flag: FedAU is kept
    assert isinstance(second.server_half, FedAUServer)
    assert second.server_half.weights() == weights
    assert second.server_half.history == first.server_half.history
    second.state.close()
