"""The coordinator in --mode async: tasks on fetch, a version per buffer, staleness, restarts."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from fedft.core.async_options import AsyncSettings, staleness_weight
from fedft.core.errors import UsageError
from fedft.core.identity import generate_key, hash_token, public_key_bytes
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.server.async_coordinator import AsyncCoordinator
from fedft.server.coordinator import Assignment, Coordinator, Rejected
from fedft.server.round_view import round_view
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE, TokenRecord

START = 1_750_000_000.0
TIMEOUT = 60.0
Make = Callable[..., Coordinator]


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def adapter(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model.layers.0.q.lora_A.weight": torch.randn(4, 8, generator=g),
        "model.layers.0.q.lora_B.weight": torch.randn(8, 4, generator=g),
    }


def update(tensors: dict[str, torch.Tensor], num_examples: int) -> bytes:
    return payload_to_bytes(Payload(tensors=tensors, metrics={"num_examples": num_examples}))


def enroll(coordinator: Coordinator, client_id: str, num_examples: int = 100) -> None:
    token = f"fedft_token-{client_id}"
    coordinator.state.add_token(TokenRecord(hash_token(token), coordinator.clock()))
    key = public_key_bytes(generate_key())
    coordinator.enroll(token, key, client_id, num_examples=num_examples)


def step(coordinator: Coordinator) -> bool:
    """One pass of the round loop: open the next buffer, or apply the open one if it is due."""
    current = coordinator._open_round()
    if current is None:
        return coordinator._start_next_round()
    if coordinator._round_complete(current):
        coordinator._close(current)
        return True
    return False


def fetch(coordinator: Coordinator, client_id: str) -> Assignment:
    assignment = coordinator.fetch_task(client_id, 0)
    assert assignment is not None, f"{client_id} got no task"
    return assignment


def submit(coordinator: Coordinator, task: Assignment, tensors: dict[str, Any], n: int) -> None:
    record = task.task
    coordinator.submit(record.client_id, record.task_id, record.round, update(tensors, n))


def global_adapter(coordinator: Coordinator) -> dict[str, torch.Tensor]:
    return payload_from_bytes(coordinator.global_payload()).tensors


Tensors = dict[str, torch.Tensor]


def fedbuff_step(current: Tensors, updates: list[tuple[Tensors, int, int, Tensors]]) -> Tensors:
    """``current + sum_i n_i d(s_i) (x_i - base_i) / sum_i n_i`` for (x_i, n_i, s_i, base_i)."""
    total = sum(n for _, n, _, _ in updates)
    result = {}
    for name, value in current.items():
        change = torch.zeros_like(value, dtype=torch.float64)
        for x, n, s, base in updates:
            change += n * staleness_weight(s) * (x[name].double() - base[name].double())
        result[name] = (value.double() + change / total).float()
    return result


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(make_coordinator: Make) -> Make:
    return partial(
        make_coordinator,
        seed=7,
        initial=adapter(0),
        rounds=3,
        round_timeout_s=TIMEOUT,
        mode=AsyncSettings(buffer=2, max_staleness=2),
    )


def three_clients(coordinator: Coordinator) -> None:
    for client_id, n in (("a", 10), ("b", 30), ("c", 20)):
        enroll(coordinator, client_id, n)


def test_a_version_per_buffer_with_stale_updates_discounted(make: Make, clock: FakeClock) -> None:
    coordinator = make(InMemoryState(), clock)
    three_clients(coordinator)
    assert step(coordinator)  # round 1: the buffer of version 1
    tasks = {c: fetch(coordinator, c) for c in "abc"}
    assert {t.task.round for t in tasks.values()} == {1}
    tickets = [t.task.ticket for t in tasks.values()]
    assert len(set(tickets)) == 3
    assert all(ticket is not None for ticket in tickets)
    v0 = adapter(0)
    submit(coordinator, tasks["a"], adapter(1), 10)
    assert not step(coordinator)  # one of two
    submit(coordinator, tasks["b"], adapter(2), 30)
    assert step(coordinator)  # exactly at the second update
    v1 = global_adapter(coordinator)
    want = fedbuff_step(v0, [(adapter(1), 10, 0, v0), (adapter(2), 30, 0, v0)])
    for name in v1:
        torch.testing.assert_close(v1[name], want[name], rtol=1e-6, atol=1e-7)
    assert step(coordinator)  # round 2 opens
    fresh = fetch(coordinator, "a")
    assert fresh.task.round == 2
    assert payload_from_bytes(fresh.data).tensors.keys() == v1.keys()
    # c trained from version 0 and lands after version 1: staleness 1.
    submit(coordinator, tasks["c"], adapter(3), 20)
    submit(coordinator, fresh, adapter(4), 10)
    assert step(coordinator)
    v2 = global_adapter(coordinator)
    want = fedbuff_step(v1, [(adapter(3), 20, 1, v0), (adapter(4), 10, 0, v1)])
    for name in v2:
        torch.testing.assert_close(v2[name], want[name], rtol=1e-6, atol=1e-7)
    record = coordinator.state.get_round(2)
    assert record is not None
    assert record.status == ROUND_DONE
    assert record.metrics["accepted"] == 2
    assert record.metrics["staleness_max"] == 1
    assert record.metrics["staleness_mean"] == 0.5
    # What reports read back: c answered in round 2 a task of round 1.
    view = round_view(coordinator.state, 2)
    assert view.staleness == {"a": 0, "c": 1}
    assert view.participants == 2
    assert set(view.client_bytes) == {"a", "c"}


def test_an_update_staler_than_the_cap_is_refused(make: Make, clock: FakeClock) -> None:
    coordinator = make(InMemoryState(), clock, mode=AsyncSettings(buffer=1, max_staleness=1))
    three_clients(coordinator)
    step(coordinator)
    old = fetch(coordinator, "c")
    for version in (1, 2):
        task = fetch(coordinator, "a")
        submit(coordinator, task, adapter(version), 10)
        assert step(coordinator)  # applied
        assert step(coordinator)  # the next buffer opens
    with pytest.raises(Rejected) as info:
        submit(coordinator, old, adapter(9), 20)
    assert info.value.code == "stale"
    assert "2 versions behind" in str(info.value)
    assert "--max-staleness 1" in str(info.value)
    assert coordinator.state.updates_for_round(3) == []


def test_a_refetch_returns_the_unanswered_task_and_then_a_new_one(
    make: Make, clock: FakeClock
) -> None:
    coordinator = make(InMemoryState(), clock)
    three_clients(coordinator)
    step(coordinator)
    first = fetch(coordinator, "a")
    assert fetch(coordinator, "a").task == first.task  # a client that lost the answer
    submit(coordinator, first, adapter(1), 10)
    second = fetch(coordinator, "a")
    assert second.task.task_id != first.task.task_id
    assert second.task.ticket is not None
    assert first.task.ticket is not None
    assert second.task.ticket > first.task.ticket
    with pytest.raises(Rejected) as info:
        submit(coordinator, first, adapter(2), 10)
    assert info.value.code == "duplicate"


def test_a_deadline_applies_a_partial_buffer_and_waits_on_an_empty_one(
    make: Make, clock: FakeClock
) -> None:
    coordinator = make(InMemoryState(), clock)
    three_clients(coordinator)
    step(coordinator)
    clock.now += TIMEOUT + 1
    assert not step(coordinator)  # nothing arrived: keep waiting, with a new deadline
    current = coordinator._open_round()
    assert current is not None
    assert current.deadline == clock.now + TIMEOUT
    submit(coordinator, fetch(coordinator, "b"), adapter(5), 30)
    clock.now += TIMEOUT + 1
    assert step(coordinator)
    record = coordinator.state.get_round(1)
    assert record is not None
    assert record.metrics["accepted"] == 1


def _scenario(coordinator: Coordinator, *, crash: Callable[[], Coordinator] | None) -> Coordinator:
    """Versions 1 and 2 of buffer 2, with c's stale update and a crash between acknowledgements."""
    three_clients(coordinator)
    step(coordinator)
    tasks = {c: fetch(coordinator, c) for c in "abc"}
    submit(coordinator, tasks["a"], adapter(1), 10)
    submit(coordinator, tasks["b"], adapter(2), 30)
    assert step(coordinator)
    assert step(coordinator)
    again = fetch(coordinator, "a")
    submit(coordinator, again, adapter(4), 10)  # acknowledged: must survive the crash
    if crash is not None:
        coordinator = crash()
        assert coordinator.state.updates_for_round(2)[0].client_id == "a"
    # c's task (from version 0, built before the crash) is answered after it.
    submit(coordinator, tasks["c"], adapter(3), 20)
    assert step(coordinator)  # version 2 applied
    assert step(coordinator)  # round 3 opens
    later = fetch(coordinator, "b")
    assert later.task.ticket is not None
    assert tasks["c"].task.ticket is not None
    assert later.task.ticket > max(t.task.ticket or 0 for t in (*tasks.values(), again))
    return coordinator


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_crash_loses_no_acknowledged_update_and_changes_nothing(
    make: Make, clock: FakeClock, tmp_path: Path, backend: str
) -> None:
    reference = _scenario(make(InMemoryState(), clock), crash=None)
    state: Any = InMemoryState() if backend == "memory" else f"sqlite:///{tmp_path / 's.db'}"
    first = make(state, clock)

    def crash() -> Coordinator:
        if backend == "sqlite":
            first.state.close()  # the process dies; only the database remains
            return make(state, clock)
        return make(first.state, clock)

    resumed = _scenario(first, crash=crash)
    got, want = global_adapter(resumed), global_adapter(reference)
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_a_run_cannot_switch_modes_on_restart(make: Make, clock: FakeClock) -> None:
    state = InMemoryState()
    make(state, clock)
    with pytest.raises(ValueError, match="asynchronous run: restart it with --mode async"):
        make(state, clock, mode=None)
    synchronous = InMemoryState()
    make(synchronous, clock, mode=None)
    with pytest.raises(ValueError, match="synchronous run: --mode async needs a new --db"):
        make(synchronous, clock)


def test_a_restart_keeps_the_runs_buffer_settings(make: Make, clock: FakeClock) -> None:
    state = InMemoryState()
    make(state, clock)
    again = make(state, clock, mode=AsyncSettings(buffer=5, max_staleness=1))
    assert isinstance(again, AsyncCoordinator)
    assert again.mode == AsyncSettings(buffer=2, max_staleness=2)


def test_strategies_that_cannot_run_async_are_refused(make: Make, clock: FakeClock) -> None:
    with pytest.raises(UsageError, match="cannot run with --mode async"):
        make(InMemoryState(), clock, strategy="hetlora")
    with pytest.raises(UsageError, match="min_clients"):
        make(InMemoryState(), clock, options={"min_clients": 2})


def test_the_run_finishes_after_its_versions(make: Make, clock: FakeClock) -> None:
    coordinator = make(InMemoryState(), clock, mode=AsyncSettings(buffer=1), rounds=2)
    three_clients(coordinator)
    for version in (1, 2):
        assert step(coordinator)
        submit(coordinator, fetch(coordinator, "a"), adapter(version), 10)
        assert step(coordinator)
    assert coordinator.finished()
    assert not step(coordinator)
    assert coordinator.fetch_task("b", 0) is None
    assert math.isfinite(float(global_adapter(coordinator)["model.layers.0.q.lora_A.weight"].sum()))


def test_an_update_for_a_full_buffer_joins_the_next_version(make: Make, clock: FakeClock) -> None:
    coordinator = make(InMemoryState(), clock)
    three_clients(coordinator)
    step(coordinator)
    tasks = {c: fetch(coordinator, c) for c in "abc"}
    submit(coordinator, tasks["a"], adapter(1), 10)
    submit(coordinator, tasks["b"], adapter(2), 30)
    third = threading.Thread(target=submit, args=(coordinator, tasks["c"], adapter(3), 20))
    third.start()  # the buffer of version 1 is full: c waits for version 2's
    third.join(1.0)
    assert third.is_alive()
    assert step(coordinator)  # version 1: exactly a and b
    assert step(coordinator)  # round 2 opens, and c's update joins it
    third.join(10.0)
    assert not third.is_alive()
    assert [u.client_id for u in coordinator.state.updates_for_round(1)] == ["a", "b"]
    assert [u.client_id for u in coordinator.state.updates_for_round(2)] == ["c"]
    record = coordinator.state.get_round(1)
    assert record is not None
    assert record.metrics["accepted"] == 2
