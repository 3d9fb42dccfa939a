"""The round engine without gRPC: enrollment, rounds, submissions, deadlines and restarts."""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from fedft.core.identity import generate_key, hash_token, public_key_bytes
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.sampling import client_seed, sample_clients
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo
from fedft.server.coordinator import Assignment, Coordinator, Rejected
from fedft.server.state.base import State
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE, ROUND_OPEN, TokenRecord

SPEC = get_strategy("fedavg_lora")
SEED = 1234
START = 1_750_000_000.0
TIMEOUT = 60.0
LIVENESS = 30.0
GRACE = 20.0


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = START):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class OffsetClock:
    """Real time plus a settable offset, for tests that run the real round loop in a thread."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small synthetic LoRA adapter: a few float32 tensors, no model needed."""
    g = torch.Generator().manual_seed(seed)
    return {
        "layers.0.q_proj.lora_A": torch.randn(4, 16, generator=g),
        "layers.0.q_proj.lora_B": torch.randn(16, 4, generator=g),
        "layers.1.v_proj.lora_A": torch.randn(4, 16, generator=g),
    }


INITIAL = adapter(0)


def update(tensors: dict[str, torch.Tensor], num_examples: int = 10) -> bytes:
    return payload_to_bytes(Payload(tensors=tensors, metrics={"num_examples": num_examples}))


def add_token(coordinator: Coordinator, token: str, *, expires_in: float | None = None) -> None:
    now = coordinator.clock()
    expires = None if expires_in is None else now + expires_in
    coordinator.state.add_token(TokenRecord(hash_token(token), now, expires_at=expires))


def enroll(coordinator: Coordinator, client_id: str, num_examples: int = 10) -> str:
    token = f"fedft_token-for-{client_id}"
    add_token(coordinator, token)
    key = public_key_bytes(generate_key())
    return coordinator.enroll(token, key, client_id, num_examples=num_examples).client_id


def step(coordinator: Coordinator) -> bool:
    """One pass of ``run_rounds``: start, or close, a round if it is time; True if one did."""
    current = coordinator._open_round()
    if current is None:
        return coordinator._start_next_round()
    if coordinator._round_complete(current):
        coordinator._close(current)
        return True
    return False


def snapshot(state: State) -> tuple[Any, ...]:
    """Everything a rejected call must leave untouched."""
    assert isinstance(state, InMemoryState)
    rounds = state.list_rounds()
    return (
        state.list_clients(),
        state.list_tokens(),
        rounds,
        [state.tasks_for_round(r.round) for r in rounds],
        [state.updates_for_round(r.round) for r in rounds],
        state.list_traffic(),
        dict(state._blobs),
    )


def assert_tensors_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert torch.equal(got[name], tensor), name


def weighted_mean(*pairs: tuple[dict[str, torch.Tensor], int]) -> dict[str, torch.Tensor]:
    total = sum(weight for _, weight in pairs)
    return {
        name: (sum(t[name].double() * w for t, w in pairs) / total).float()  # type: ignore[misc]
        for name in pairs[0][0]
    }


def global_tensors(coordinator: Coordinator) -> dict[str, torch.Tensor]:
    return payload_from_bytes(coordinator.global_payload()).tensors


def must_fetch(coordinator: Coordinator, client_id: str) -> Assignment:
    assignment = coordinator.fetch_task(client_id, 0)
    assert assignment is not None, f"{client_id} has no task"
    return assignment


def reject_code(call: Any) -> str:
    with pytest.raises(Rejected) as info:
        call()
    return info.value.code


Make = Callable[..., Coordinator]


@pytest.fixture
def make(make_coordinator: Make) -> Make:
    """This file's coordinators: two rounds of two clients, under the timings above."""
    return partial(
        make_coordinator,
        seed=SEED,
        initial=INITIAL,
        rounds=2,
        min_clients=2,
        round_timeout_s=TIMEOUT,
        liveness_s=LIVENESS,
        restart_grace_s=GRACE,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def coordinator(make: Make, clock: FakeClock) -> Coordinator:
    return make(InMemoryState(), clock)


@pytest.fixture
def open_round(make: Make, clock: FakeClock) -> tuple[Coordinator, dict[str, Assignment]]:
    """Round 1 of 2 open with tasks for edge-a and edge-b."""
    coordinator = make(InMemoryState(), clock)
    for client_id in ("edge-a", "edge-b"):
        enroll(coordinator, client_id)
    assert step(coordinator)
    tasks = {c: must_fetch(coordinator, c) for c in ("edge-a", "edge-b")}
    return coordinator, tasks


# --- enrollment ------------------------------------------------------------------------------


def test_enroll_happy_path(coordinator: Coordinator, clock: FakeClock) -> None:
    add_token(coordinator, "fedft_one", expires_in=60)
    key = public_key_bytes(generate_key())
    record = coordinator.enroll("fedft_one", key, "edge-1", num_examples=7, properties={"gb": 8.5})
    assert record.client_id == "edge-1"
    assert record.public_key == key
    assert (record.enrolled_at, record.last_seen) == (clock.now, clock.now)
    assert (record.num_examples, record.properties) == (7, {"gb": 8.5})
    assert coordinator.state.get_client("edge-1") == record
    assert coordinator.public_key("edge-1") == key
    (token,) = coordinator.state.list_tokens()
    assert (token.used_at, token.used_by) == (clock.now, "edge-1")
    # Surrounding whitespace is not part of a token (it comes from copy and paste).
    add_token(coordinator, "fedft_two")
    chosen = coordinator.enroll(" fedft_two\n", public_key_bytes(generate_key())).client_id
    assert re.fullmatch(r"client-[0-9a-f]{8}", chosen)
    assert [c.client_id for c in coordinator.state.list_clients()] == sorted(["edge-1", chosen])


def test_reused_token_is_unauthenticated(coordinator: Coordinator) -> None:
    add_token(coordinator, "fedft_once")
    coordinator.enroll("fedft_once", public_key_bytes(generate_key()), "edge-1")
    before = snapshot(coordinator.state)
    key = public_key_bytes(generate_key())
    assert reject_code(lambda: coordinator.enroll("fedft_once", key, "edge-2")) == (
        "unauthenticated"
    )
    assert coordinator.state.get_client("edge-2") is None
    assert snapshot(coordinator.state) == before


def test_unknown_and_expired_tokens(coordinator: Coordinator, clock: FakeClock) -> None:
    key = public_key_bytes(generate_key())
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.enroll("fedft_never", key, "edge-1")) == (
        "unauthenticated"
    )
    assert snapshot(coordinator.state) == before
    add_token(coordinator, "fedft_soon", expires_in=10)
    clock.advance(10)  # a token is dead at its expiry instant
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.enroll("fedft_soon", key, "edge-1")) == (
        "unauthenticated"
    )
    assert snapshot(coordinator.state) == before
    assert coordinator.state.list_clients() == []


def test_token_just_before_expiry_works(coordinator: Coordinator, clock: FakeClock) -> None:
    add_token(coordinator, "fedft_soon", expires_in=10)
    clock.advance(9.999)
    assert coordinator.enroll("fedft_soon", public_key_bytes(generate_key()), "edge-1")


@pytest.mark.parametrize(
    ("client_id", "key_len", "num_examples"),
    [
        ("Edge-1", 32, 0),  # upper case
        ("-edge", 32, 0),  # must start with a letter or digit
        ("edge/1", 32, 0),
        ("a" * 64, 32, 0),  # 63 characters at most
        ("edge 1", 32, 0),
        ("edge-1", 31, 0),
        ("edge-1", 33, 0),
        ("edge-1", 0, 0),
        ("edge-1", 32, -1),
    ],
)
def test_invalid_enrollment_keeps_the_token(
    coordinator: Coordinator, client_id: str, key_len: int, num_examples: int
) -> None:
    add_token(coordinator, "fedft_t")
    key = public_key_bytes(generate_key())
    bad_key = (key * 2)[:key_len]
    before = snapshot(coordinator.state)
    code = reject_code(
        lambda: coordinator.enroll("fedft_t", bad_key, client_id, num_examples=num_examples)
    )
    assert code == "invalid"
    assert snapshot(coordinator.state) == before
    assert coordinator.enroll("fedft_t", key, "edge-ok").client_id == "edge-ok"


def test_longest_client_id_is_accepted(coordinator: Coordinator) -> None:
    add_token(coordinator, "fedft_t")
    assert coordinator.enroll("fedft_t", public_key_bytes(generate_key()), "a" * 63)


def test_duplicate_client_id_keeps_the_token(coordinator: Coordinator) -> None:
    enroll(coordinator, "edge-1")
    add_token(coordinator, "fedft_second")
    before = snapshot(coordinator.state)
    key = public_key_bytes(generate_key())
    assert reject_code(lambda: coordinator.enroll("fedft_second", key, "edge-1")) == "exists"
    assert snapshot(coordinator.state) == before
    assert coordinator.public_key("edge-1") != key  # the first enrollment keeps its key
    assert coordinator.enroll("fedft_second", key, "edge-2").public_key == key


# --- starting rounds ---------------------------------------------------------------------------


def test_no_round_until_min_clients_are_alive(coordinator: Coordinator, clock: FakeClock) -> None:
    enroll(coordinator, "edge-a")
    assert not step(coordinator)
    clock.advance(LIVENESS + 1)  # edge-a falls out of the liveness window
    enroll(coordinator, "edge-b")
    assert [c.client_id for c in coordinator.alive_clients()] == ["edge-b"]
    assert not step(coordinator)
    assert coordinator.current_round() == 0
    assert coordinator.state.list_rounds() == []
    assert coordinator.fetch_task("edge-b", 0) is None
    coordinator.heartbeat("edge-a")
    clock.advance(LIVENESS)  # seen exactly liveness_s ago still counts as alive
    coordinator.heartbeat("edge-b")
    assert [c.client_id for c in coordinator.alive_clients()] == ["edge-a", "edge-b"]
    assert step(coordinator)
    (round_one,) = coordinator.state.list_rounds()
    assert (round_one.round, round_one.status) == (1, ROUND_OPEN)
    assert (round_one.started_at, round_one.deadline) == (clock.now, clock.now + TIMEOUT)
    assert {t.client_id for t in coordinator.state.tasks_for_round(1)} == {"edge-a", "edge-b"}


def test_fetch_task_counts_as_liveness(coordinator: Coordinator, clock: FakeClock) -> None:
    enroll(coordinator, "edge-a")
    enroll(coordinator, "edge-b")
    clock.advance(LIVENESS + 1)
    assert not step(coordinator)
    assert coordinator.fetch_task("edge-a", 0) is None
    assert coordinator.fetch_task("edge-b", 0) is None
    assert step(coordinator)


def test_heartbeat_updates_the_profile(coordinator: Coordinator, clock: FakeClock) -> None:
    enroll(coordinator, "edge-a", num_examples=3)
    clock.advance(5)
    coordinator.heartbeat("edge-a", num_examples=9, properties={"step_s": 0.25})
    client = coordinator.state.get_client("edge-a")
    assert client is not None
    assert (client.last_seen, client.num_examples, client.properties) == (
        clock.now,
        9,
        {"step_s": 0.25},
    )


def test_heartbeat_with_a_negative_count_is_invalid(
    coordinator: Coordinator, clock: FakeClock
) -> None:
    enroll(coordinator, "edge-a", num_examples=3)
    clock.advance(5)
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.heartbeat("edge-a", num_examples=-1)) == "invalid"
    assert snapshot(coordinator.state) == before


def test_tasks_go_to_sampled_clients_with_the_strategy_payload(
    make: Make, clock: FakeClock
) -> None:
    options = {"fraction": 0.5, "local_steps": 3, "batch_size": 2, "lr": 0.01}
    coordinator = make(InMemoryState(), clock, options=options)
    ids = [f"edge-{i}" for i in range(5)]
    for i, client_id in enumerate(ids):
        enroll(coordinator, client_id, num_examples=i + 1)
    infos = [ClientInfo(c, i + 1) for i, c in enumerate(ids)]
    expected = sample_clients(infos, ids, fraction=0.5, min_clients=1, seed=SEED, server_round=1)
    assert len(expected) == 3  # ceil(0.5 * 5)
    sampled = {c.client_id for c in expected}
    assert step(coordinator)
    tasks = coordinator.state.tasks_for_round(1)
    assert {t.client_id for t in tasks} == sampled
    assert len({t.task_id for t in tasks}) == len(tasks)
    for client_id in ids:
        assignment = coordinator.fetch_task(client_id, 0)
        if client_id not in sampled:
            assert assignment is None
            continue
        assert assignment is not None
        assert assignment.task.client_id == client_id
        assert assignment.task.round == 1
        assert assignment.deadline == clock.now + TIMEOUT
        payload = payload_from_bytes(assignment.data)
        assert_tensors_equal(payload.tensors, INITIAL)
        assert payload.config == {
            "round": 1,
            "seed": client_seed(SEED, 1, client_id),
            "local_steps": 3,
            "batch_size": 2,
            "lr": 0.01,
        }
        assert payload.metrics == {}
        # The shared-blob storage is invisible to the client: the bytes are the full payload.
        assert assignment.data == payload_to_bytes(payload)
    # Every task shares the one tensor blob; each has its own small config blob.
    assert len({t.payload_shas[0] for t in tasks}) == 1
    assert len({t.payload_shas[1] for t in tasks}) == len(tasks)


def test_fetch_task_returns_none_once_answered(
    open_round: tuple[Coordinator, dict[str, Assignment]],
) -> None:
    coordinator, tasks = open_round
    again = coordinator.fetch_task("edge-a", 0)
    assert again is not None
    assert again.task == tasks["edge-a"].task
    assert again.data == tasks["edge-a"].data
    coordinator.submit("edge-a", tasks["edge-a"].task.task_id, 1, update(adapter(1)))
    assert coordinator.fetch_task("edge-a", 0) is None
    assert coordinator.fetch_task("edge-b", 0) is not None


# --- submissions -------------------------------------------------------------------------------


def _nan(tensors: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    spoiled = dict(tensors)
    name = next(iter(spoiled))
    spoiled[name] = spoiled[name].clone()
    spoiled[name][0, 0] = value
    return spoiled


def _bad_tensor_bytes() -> bytes:
    # A well-formed message whose tensor claims more bytes than it carries.
    from fedft.proto.v1 import payload_pb2

    message = payload_pb2.Payload(
        tensors=[payload_pb2.Tensor(name="x", dtype="float32", shape=[4], data=b"\0" * 8)]
    )
    return message.SerializeToString()


GOOD = adapter(1)
BAD_UPDATES = {
    "truncated": b"\x0a\xff\x01",
    "garbage": b"\xff" * 16,
    "short tensor": _bad_tensor_bytes(),
    "wrong shape": update({**GOOD, "layers.0.q_proj.lora_A": torch.zeros(4, 8)}),
    "transposed": update({**GOOD, "layers.0.q_proj.lora_A": GOOD["layers.0.q_proj.lora_A"].T}),
    "missing tensor": update({k: v for k, v in GOOD.items() if "v_proj" not in k}),
    "extra tensor": update({**GOOD, "extra": torch.zeros(2)}),
    "integer tensor": update(
        {**GOOD, "layers.0.q_proj.lora_A": torch.zeros(4, 16, dtype=torch.int32)}
    ),
    "nan": update(_nan(GOOD, float("nan"))),
    "inf": update(_nan(GOOD, float("inf"))),
    "no num_examples": payload_to_bytes(Payload(tensors=GOOD)),
    "zero num_examples": update(GOOD, 0),
    "float num_examples": payload_to_bytes(Payload(tensors=GOOD, metrics={"num_examples": 10.0})),
}


@pytest.mark.parametrize("case", sorted(BAD_UPDATES))
def test_invalid_update_is_refused_and_nothing_stored(
    open_round: tuple[Coordinator, dict[str, Assignment]], case: str
) -> None:
    coordinator, tasks = open_round
    task_id = tasks["edge-a"].task.task_id
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.submit("edge-a", task_id, 1, BAD_UPDATES[case])) == (
        "invalid"
    )
    assert snapshot(coordinator.state) == before
    # The task is still open for a good update.
    coordinator.submit("edge-a", task_id, 1, update(GOOD))
    assert len(coordinator.state.updates_for_round(1)) == 1


def test_submit_refusals_by_task(open_round: tuple[Coordinator, dict[str, Assignment]]) -> None:
    coordinator, tasks = open_round
    a_task = tasks["edge-a"].task.task_id
    data = update(GOOD)
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.submit("edge-a", "no-such-task", 1, data)) == (
        "not_found"
    )
    assert reject_code(lambda: coordinator.submit("edge-b", a_task, 1, data)) == "permission"
    assert reject_code(lambda: coordinator.submit("edge-a", a_task, 2, data)) == "invalid"
    assert reject_code(lambda: coordinator.submit("edge-a", a_task, 0, data)) == "invalid"
    assert snapshot(coordinator.state) == before


def test_submit_after_the_deadline_is_stale(
    open_round: tuple[Coordinator, dict[str, Assignment]], clock: FakeClock
) -> None:
    coordinator, tasks = open_round
    a_task = tasks["edge-a"].task.task_id
    clock.advance(TIMEOUT)  # at the deadline itself the update is still taken...
    coordinator.submit("edge-a", a_task, 1, update(GOOD))
    clock.advance(0.001)  # ...but not after it
    b_task = tasks["edge-b"].task.task_id
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.submit("edge-b", b_task, 1, update(GOOD))) == "stale"
    assert snapshot(coordinator.state) == before
    # Once the round is closed, a late update is stale too (not a duplicate, not invalid).
    assert step(coordinator)
    assert coordinator.state.get_round(1).status == ROUND_DONE  # type: ignore[union-attr]
    clock.now -= 10  # even with a clock that went back before the deadline
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.submit("edge-b", b_task, 1, update(GOOD))) == "stale"
    assert snapshot(coordinator.state) == before


def test_duplicate_update_first_one_wins(
    open_round: tuple[Coordinator, dict[str, Assignment]],
) -> None:
    coordinator, tasks = open_round
    a_task = tasks["edge-a"].task.task_id
    first, second = update(adapter(1), 4), update(adapter(2), 5)
    record = coordinator.submit("edge-a", a_task, 1, first)
    assert (record.task_id, record.round, record.client_id, record.size) == (
        a_task,
        1,
        "edge-a",
        len(first),
    )
    before = snapshot(coordinator.state)
    assert reject_code(lambda: coordinator.submit("edge-a", a_task, 1, second)) == "duplicate"
    assert reject_code(lambda: coordinator.submit("edge-a", a_task, 1, first)) == "duplicate"
    assert snapshot(coordinator.state) == before
    (stored,) = coordinator.state.updates_for_round(1)
    assert stored == record
    assert coordinator.state.get_blob(stored.payload_sha) == first


# --- closing rounds ----------------------------------------------------------------------------


def test_round_closes_when_every_task_is_answered(
    open_round: tuple[Coordinator, dict[str, Assignment]], clock: FakeClock
) -> None:
    coordinator, tasks = open_round
    coordinator.submit("edge-a", tasks["edge-a"].task.task_id, 1, update(adapter(1), 3))
    assert not step(coordinator)  # edge-b is still working, well before the deadline
    assert coordinator.state.get_round(1).status == ROUND_OPEN  # type: ignore[union-attr]
    clock.advance(1)
    coordinator.submit("edge-b", tasks["edge-b"].task.task_id, 1, update(adapter(2), 5))
    assert step(coordinator)
    done = coordinator.state.get_round(1)
    assert done is not None
    assert (done.status, done.closed_at) == (ROUND_DONE, clock.now)
    assert done.metrics["updates"] == 2
    assert done.metrics["missing"] == 0
    assert done.metrics["accepted"] == 2
    expected = weighted_mean((adapter(1), 3), (adapter(2), 5))
    assert_tensors_equal(global_tensors(coordinator), expected)
    assert_tensors_equal(payload_from_bytes(coordinator.state.get_checkpoint(1)).tensors, expected)
    # The next round starts from the new global adapter.
    assert step(coordinator)
    assert coordinator.current_round() == 2
    payload = payload_from_bytes(must_fetch(coordinator, "edge-a").data)
    assert_tensors_equal(payload.tensors, expected)
    assert payload.config["round"] == 2


def test_round_closes_at_the_deadline_without_missing_clients(make: Make, clock: FakeClock) -> None:
    coordinator = make(InMemoryState(), clock, min_clients=3)
    for client_id in ("edge-a", "edge-b", "edge-c"):
        enroll(coordinator, client_id)
    assert step(coordinator)
    tasks = {c: must_fetch(coordinator, c).task.task_id for c in ("edge-a", "edge-b", "edge-c")}
    coordinator.submit("edge-a", tasks["edge-a"], 1, update(adapter(1), 2))
    coordinator.submit("edge-c", tasks["edge-c"], 1, update(adapter(3), 7))
    clock.advance(TIMEOUT - 0.001)
    assert not step(coordinator)
    clock.advance(0.001)
    assert step(coordinator)
    done = coordinator.state.get_round(1)
    assert done is not None
    assert done.status == ROUND_DONE
    assert (done.metrics["updates"], done.metrics["missing"], done.metrics["failures"]) == (2, 1, 1)
    assert done.metrics["accepted"] == 2
    expected = weighted_mean((adapter(1), 2), (adapter(3), 7))
    assert_tensors_equal(global_tensors(coordinator), expected)


def test_round_without_any_update_keeps_the_adapter(
    open_round: tuple[Coordinator, dict[str, Assignment]], clock: FakeClock
) -> None:
    coordinator, _ = open_round
    clock.advance(TIMEOUT)
    assert step(coordinator)
    done = coordinator.state.get_round(1)
    assert done is not None
    assert (done.metrics["updates"], done.metrics["missing"], done.metrics["accepted"]) == (0, 2, 0)
    assert_tensors_equal(global_tensors(coordinator), INITIAL)


def test_run_finishes_after_its_rounds(make: Make, clock: FakeClock) -> None:
    coordinator = make(InMemoryState(), clock, rounds=2)
    for client_id in ("edge-a", "edge-b"):
        enroll(coordinator, client_id)
    for number in (1, 2):
        assert not coordinator.finished()
        assert step(coordinator)
        for client_id in ("edge-a", "edge-b"):
            task = must_fetch(coordinator, client_id).task
            assert task.round == number
            coordinator.submit(client_id, task.task_id, number, update(adapter(number)))
        assert step(coordinator)
    assert coordinator.finished()
    assert [r.status for r in coordinator.state.list_rounds()] == [ROUND_DONE, ROUND_DONE]
    started = time.monotonic()
    assert coordinator.fetch_task("edge-a", 30.0) is None
    assert time.monotonic() - started < 0.5
    coordinator.run_rounds()  # returns at once: nothing left to do
    assert coordinator.current_round() == 2


def test_run_rounds_in_a_thread(make: Make) -> None:
    """The real loop: closes on the last update, and at the deadline when someone is missing."""
    clock = OffsetClock()
    coordinator = make(InMemoryState(), clock, rounds=2)
    for client_id in ("edge-a", "edge-b"):
        enroll(coordinator, client_id)
    loop = threading.Thread(target=coordinator.run_rounds, daemon=True)
    loop.start()
    try:
        for client_id in ("edge-a", "edge-b"):
            assignment = coordinator.fetch_task(client_id, 2.0)
            assert assignment is not None
            assert assignment.task.round == 1
            coordinator.submit(client_id, assignment.task.task_id, 1, update(adapter(1)))
        assignment = coordinator.fetch_task("edge-a", 2.0)
        assert assignment is not None
        assert assignment.task.round == 2
        coordinator.submit("edge-a", assignment.task.task_id, 2, update(adapter(2), 3))
        clock.offset += TIMEOUT + 1  # edge-b never answers
        coordinator._notify()
        loop.join(2.0)
        assert not loop.is_alive()
    finally:
        coordinator.stop()
        loop.join(2.0)
    assert coordinator.finished()
    last = coordinator.state.get_round(2)
    assert last is not None
    assert (last.metrics["updates"], last.metrics["missing"]) == (1, 1)
    assert_tensors_equal(global_tensors(coordinator), adapter(2))


def test_stop_releases_waiting_fetches(make: Make) -> None:
    coordinator = make(InMemoryState(), OffsetClock())
    enroll(coordinator, "edge-a")
    threading.Timer(0.1, coordinator.stop).start()
    started = time.monotonic()
    assert coordinator.fetch_task("edge-a", 5.0) is None
    assert time.monotonic() - started < 1.0


# --- restarts ----------------------------------------------------------------------------------


def test_restart_resumes_the_open_round(make: Make, tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    first = make(url, clock, min_clients=3)
    for client_id, n in (("edge-a", 2), ("edge-b", 3), ("edge-c", 4)):
        enroll(first, client_id, num_examples=n)
    assert step(first)
    tasks = {c: must_fetch(first, c).task for c in ("edge-a", "edge-b", "edge-c")}
    first.submit("edge-a", tasks["edge-a"].task_id, 1, update(adapter(1), 2))
    first.submit("edge-b", tasks["edge-b"].task_id, 1, update(adapter(2), 3))
    run = first.run
    first.state.close()  # the process dies mid-round

    clock.advance(TIMEOUT + 5)  # and stays down past the round's deadline
    second = make(url, clock, min_clients=3)
    assert second.run == run
    current = second._open_round()
    assert current is not None
    assert current.round == 1
    assert current.deadline == clock.now + GRACE
    assert [u.client_id for u in second.state.updates_for_round(1)] == ["edge-a", "edge-b"]
    assert not step(second)  # the grace period is on
    assert second.fetch_task("edge-a", 0) is None
    resumed = must_fetch(second, "edge-c")
    assert resumed.task == tasks["edge-c"]
    assert_tensors_equal(payload_from_bytes(resumed.data).tensors, INITIAL)
    second.submit("edge-c", tasks["edge-c"].task_id, 1, update(adapter(3), 4))
    assert step(second)
    done = second.state.get_round(1)
    assert done is not None
    assert (done.status, done.metrics["updates"], done.metrics["missing"]) == (ROUND_DONE, 3, 0)
    expected = weighted_mean((adapter(1), 2), (adapter(2), 3), (adapter(3), 4))
    assert_tensors_equal(global_tensors(second), expected)
    second.state.close()


def test_restart_keeps_a_far_deadline(make: Make, clock: FakeClock) -> None:
    state = InMemoryState()
    first = make(state, clock)
    enroll(first, "edge-a")
    enroll(first, "edge-b")
    assert step(first)
    deadline = first.state.get_round(1).deadline  # type: ignore[union-attr]
    clock.advance(1)
    make(state, clock)
    assert state.get_round(1).deadline == deadline  # type: ignore[union-attr]
    clock.advance(TIMEOUT - GRACE)  # less than the grace period left: extended
    make(state, clock)
    assert state.get_round(1).deadline == clock.now + GRACE  # type: ignore[union-attr]


def test_restart_after_a_closed_round_resumes_its_checkpoint(
    make: Make, open_round: tuple[Coordinator, dict[str, Assignment]], clock: FakeClock
) -> None:
    coordinator, tasks = open_round
    for client_id in ("edge-a", "edge-b"):
        coordinator.submit(client_id, tasks[client_id].task.task_id, 1, update(adapter(5)))
    assert step(coordinator)
    restarted = make(coordinator.state, clock)
    assert_tensors_equal(global_tensors(restarted), adapter(5))
    assert restarted._open_round() is None
    assert step(restarted)
    assert restarted.current_round() == 2


def test_resume_with_another_strategy_is_refused(make: Make, clock: FakeClock) -> None:
    state = InMemoryState()
    make(state, clock)
    other = dataclasses.replace(SPEC, name="other_strategy")
    with pytest.raises(ValueError, match="fedavg_lora"):
        make(state, clock, strategy=other)
    assert state.get_run().strategy == "fedavg_lora"  # type: ignore[union-attr]


def test_resume_with_other_options_keeps_the_stored_run(
    make: Make, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    state = InMemoryState()
    first = make(state, clock, rounds=2, options={"local_steps": 3, "lr": 0.01}, seed=SEED)
    stored = state.get_run()
    with caplog.at_level(logging.WARNING, logger="fedft.server.coordinator"):
        second = make(state, clock, rounds=5, options={"local_steps": 7}, seed=SEED + 1)
    assert "with its stored config, seed and rounds" in caplog.text
    assert second.config == first.config
    assert second.config.to_dict()["local_steps"] == 3
    assert second.settings.rounds == 2
    assert second.server_half.seed == SEED
    assert state.get_run() == stored
    enroll(second, "edge-a")
    enroll(second, "edge-b")
    assert step(second)
    config = payload_from_bytes(must_fetch(second, "edge-a").data).config
    assert (config["local_steps"], config["lr"]) == (3, 0.01)
    assert config["seed"] == client_seed(SEED, 1, "edge-a")
