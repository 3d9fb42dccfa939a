"""Group commit: concurrent submissions share transactions; an acknowledgement means durable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from fedft.core.identity import generate_key, hash_token, public_key_bytes
from fedft.core.payload import Payload
from fedft.core.serde import payload_to_bytes
from fedft.server.commit import CommitFailed, GroupCommit
from fedft.server.coordinator import Coordinator, Rejected
from fedft.server.state.base import State, StateError
from fedft.server.state.factory import open_state
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE, NewUpdate, TaskRecord, TokenRecord

START = 1_750_000_000.0
TIMEOUT = 60.0


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i < n in n threads released together; return results or exceptions."""
    barrier = threading.Barrier(n)

    def one(i: int) -> Any:
        barrier.wait()
        try:
            return work(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# --- GroupCommit on its own ----------------------------------------------------------------------


class Recorder:
    """A write that records its batches, optionally slow, failing or blocked at first."""

    def __init__(self, *, delay: float = 0.0, fail: Callable[[list[int]], bool] | None = None):
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail = fail or (lambda batch: False)
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
        time.sleep(self.delay)
        if self.fail(items):
            raise OSError("simulated commit failure")
        return [2 * i for i in items]


def test_a_lone_caller_writes_at_once() -> None:
    write = Recorder()
    commits = GroupCommit(write)
    assert commits.run(3) == 6
    assert commits.run(4) == 8
    assert write.batches == [[3], [4]]


def test_concurrent_callers_share_writes_and_each_gets_its_own_outcome() -> None:
    write = Recorder(delay=0.02)
    commits = GroupCommit(write)
    assert race(32, commits.run) == [2 * i for i in range(32)]
    assert sorted(i for batch in write.batches for i in batch) == list(range(32))  # each once
    assert len(write.batches) < 32  # callers that queued during a write shared the next one


def test_max_batch_caps_a_write() -> None:
    write = Recorder(delay=0.02)
    commits = GroupCommit(write, max_batch=4)
    assert race(20, commits.run) == [2 * i for i in range(20)]
    assert max(len(batch) for batch in write.batches) <= 4
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(write, max_batch=0)


def test_a_failed_write_fails_its_own_batch_only() -> None:
    write = Recorder(delay=0.02, fail=lambda batch: 7 in batch)
    commits = GroupCommit(write)
    results = race(24, commits.run)
    (failed,) = [b for b in write.batches if 7 in b]
    for i, result in enumerate(results):
        if i in failed:
            assert isinstance(result, CommitFailed)
            assert isinstance(result.__cause__, OSError)
        else:
            assert result == 2 * i
    assert commits.run(100) == 200  # the lead was passed on: nobody is stuck


def test_a_wrong_number_of_outcomes_fails_the_batch() -> None:
    commits: GroupCommit[int, int] = GroupCommit(lambda items: [])
    with pytest.raises(CommitFailed, match="0 outcomes for 1"):
        commits.run(1)


class Interrupt(BaseException):
    """Not an Exception: as a KeyboardInterrupt in the leader's thread would be."""


def test_an_interrupted_leader_leaves_nobody_waiting() -> None:
    started, release = threading.Event(), threading.Event()

    def write(items: list[int]) -> list[int]:
        if items == [0]:
            started.set()
            release.wait()
            raise Interrupt
        return list(items)

    commits = GroupCommit(write)
    leader_error: list[BaseException] = []

    def lead() -> None:
        try:
            commits.run(0)
        except Interrupt as exc:
            leader_error.append(exc)

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(5)
    with ThreadPoolExecutor(4) as pool:
        waiting = [pool.submit(commits.run, i) for i in (1, 2, 3, 4)]
        time.sleep(0.05)  # they queue behind the blocked leader
        release.set()
        assert [f.result(timeout=5) for f in waiting] == [1, 2, 3, 4]
    leader.join(5)
    assert len(leader_error) == 1  # the leader's own exception reaches the leader


# --- the coordinator's update path ---------------------------------------------------------------


def adapter(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"layers.0.q_proj.lora_A": torch.randn(4, 8, generator=g)}


def update(seed: int) -> bytes:
    return payload_to_bytes(Payload(tensors=adapter(seed), metrics={"num_examples": 1}))


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


OpenRound = Callable[[State, int], tuple[Coordinator, FakeClock, list[TaskRecord]]]


@pytest.fixture
def open_round(make_coordinator: Callable[..., Coordinator]) -> OpenRound:
    """Open round 1 over a state with ``clients`` clients enrolled; return their tasks by index."""

    def open_(state: State, clients: int) -> tuple[Coordinator, FakeClock, list[TaskRecord]]:
        clock = FakeClock()
        coordinator = make_coordinator(
            state,
            clock,
            seed=1,
            initial=adapter(0),
            rounds=1,
            round_timeout_s=TIMEOUT,
            min_clients=clients,
        )
        for i in range(clients):
            token = f"fedft_token-{i}"
            state.add_token(TokenRecord(hash_token(token), clock()))
            coordinator.enroll(token, public_key_bytes(generate_key()), f"edge-{i:02d}")
        assert coordinator._start_next_round()
        by_client = {t.client_id: t for t in state.tasks_for_round(1)}
        return coordinator, clock, [by_client[f"edge-{i:02d}"] for i in range(clients)]

    return open_


def submit(coordinator: Coordinator, task: TaskRecord, seed: int) -> Any:
    return coordinator.submit(task.client_id, task.task_id, 1, update(seed), traffic=(90, 3))


def close(coordinator: Coordinator) -> None:
    current = coordinator._open_round()
    assert current is not None
    assert coordinator._round_complete(current)
    coordinator._close(current)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def batch_sizes(state: State, *, first_delay: float = 0.0) -> list[int]:
    """Record the size of every add_updates batch; the first one waits ``first_delay`` s."""
    sizes: list[int] = []
    real = state.add_updates

    def spy(items: Sequence[NewUpdate]) -> list[StateError | None]:
        sizes.append(len(items))
        if len(sizes) == 1:
            time.sleep(first_delay)  # the others queue meanwhile
        return real(items)

    state.add_updates = spy  # type: ignore[method-assign]
    return sizes


def test_every_acknowledged_update_is_in_the_database(
    open_round: OpenRound, sqlite_url: str
) -> None:
    state = open_state(sqlite_url)
    coordinator, _, tasks = open_round(state, 16)
    sizes = batch_sizes(state, first_delay=0.2)
    reader = open_state(sqlite_url)  # another connection pool, as after a crash

    def one(i: int) -> bool:
        record = submit(coordinator, tasks[i], i)
        # Acknowledged: it must be readable by anyone, right now.
        stored = {u.task_id for u in reader.updates_for_round(1)}
        return record.task_id in stored

    try:
        assert race(16, one) == [True] * 16
        assert sum(sizes) == 16
        assert max(sizes) > 1  # those that queued behind the first commit shared one
        traffic = reader.list_traffic(1)  # stored in the updates' own transactions
        assert {(t.rpc, t.bytes_up, t.bytes_down) for t in traffic} == {("SubmitUpdate", 90, 3)}
        assert sorted(t.client_id for t in traffic) == [t.client_id for t in tasks]
    finally:
        reader.close()
        state.close()


def test_a_failing_commit_acknowledges_nobody_in_its_batch(
    open_round: OpenRound, sqlite_url: str
) -> None:
    state = open_state(sqlite_url)
    coordinator, _, tasks = open_round(state, 8)
    real = state.add_updates
    batches: list[list[str]] = []

    def flaky(items: Sequence[NewUpdate]) -> list[StateError | None]:
        batches.append([item.update.client_id for item in items])
        if len(batches) == 1:
            time.sleep(0.2)  # the others queue behind the first, into one batch
        elif len(batches) == 2:
            raise OSError("simulated disk failure")
        return real(items)

    state.add_updates = flaky  # type: ignore[method-assign]
    results = race(8, lambda i: submit(coordinator, tasks[i], i))
    failed = set(batches[1])
    assert failed  # the second batch held the callers that queued
    for task, result in zip(tasks, results, strict=True):
        if task.client_id in failed:
            assert isinstance(result, Exception)
            assert not isinstance(result, Rejected)  # a server fault, not the client's
        else:
            assert result.task_id == task.task_id
    stored = {u.client_id for u in state.updates_for_round(1)}
    assert stored == {t.client_id for t in tasks} - failed  # acknowledged == stored
    # Nothing of the failed batch counts as answered: its clients can submit again.
    for i, task in enumerate(tasks):
        if task.client_id in failed:
            submit(coordinator, task, i)
    close(coordinator)
    done = state.get_round(1)
    assert done is not None
    assert (done.status, done.metrics["updates"], done.metrics["missing"]) == (ROUND_DONE, 8, 0)
    state.close()


def test_closing_waits_for_admitted_updates_and_refuses_new_ones(open_round: OpenRound) -> None:
    state = InMemoryState()
    coordinator, clock, tasks = open_round(state, 3)
    real = state.add_updates
    writing, release = threading.Event(), threading.Event()

    def slow(items: Sequence[NewUpdate]) -> list[StateError | None]:
        writing.set()
        assert release.wait(5)
        return real(items)

    state.add_updates = slow  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(submit, coordinator, tasks[0], 1)
        assert writing.wait(5)  # admitted, and its commit is under way
        clock.now += TIMEOUT + 1  # the deadline passes meanwhile
        closer = pool.submit(close, coordinator)
        time.sleep(0.1)
        assert not closer.done()  # the round does not aggregate without the admitted update
        with pytest.raises(Rejected) as refused:
            submit(coordinator, tasks[1], 2)
        assert refused.value.code == "stale"
        release.set()
        assert first.result(timeout=5).task_id == tasks[0].task_id
        closer.result(timeout=5)
    done = state.get_round(1)
    assert done is not None
    assert (done.metrics["updates"], done.metrics["missing"]) == (1, 2)  # it was aggregated
