"""The State contract, run against every backend: in memory, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from fedft.server.state import schema as s
from fedft.server.state.base import (
    ClientExists,
    DuplicateUpdate,
    RoundClosed,
    State,
    StateError,
    TokenError,
)
from fedft.server.state.factory import open_state
from fedft.server.state.records import (
    ROUND_DONE,
    ROUND_OPEN,
    ClientRecord,
    LedgerEntry,
    NewUpdate,
    RoundRecord,
    RunRecord,
    TaskRecord,
    TokenRecord,
    TrafficRecord,
    UpdateRecord,
)
from fedft.server.state.sql import SqlState

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
RUN = RunRecord("run-1", "fedavg_lora", {"lr": 0.01, "layers": [1, 2]}, 2**62 + 1, 3, "tiny", 10.5)
T0 = 1_800_000_000.123456


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory"
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    value: str = request.getfixturevalue(name)
    return value


@pytest.fixture
def state(url: str) -> Iterator[State]:
    st = open_state(url)
    yield st
    st.close()


def token(name: str, created: float = T0, expires: float | None = None) -> TokenRecord:
    return TokenRecord(sha(name.encode()), created, expires, note=f"for {name}")


def client(client_id: str, at: float = T0) -> ClientRecord:
    return ClientRecord(client_id, b"\x00key-" + client_id.encode(), at, at, 5, {"os": "linux"})


def enroll(state: State, client_id: str) -> ClientRecord:
    state.add_token(token(f"tok-{client_id}"))
    return state.enroll(sha(f"tok-{client_id}".encode()), client(client_id), T0 + 1)


def open_round(state: State, number: int, client_ids: list[str]) -> list[TaskRecord]:
    """Open round ``number`` with one task per client: a shared blob, then one of its own."""
    shared = f"tensors {number}".encode()
    own = [f"config {number} {c}".encode() for c in client_ids]
    tasks = [
        TaskRecord(f"r{number}-{c}", number, c, (sha(shared), sha(p)), T0 + number)
        for c, p in zip(client_ids, own, strict=True)
    ]
    blobs = [shared, *own, shared]  # a blob given twice is stored once
    state.open_round(RoundRecord(number, ROUND_OPEN, T0 + number, T0 + number + 60), tasks, blobs)
    return tasks


def update_for(task: TaskRecord, data: bytes, at: float = T0 + 5) -> UpdateRecord:
    return UpdateRecord(task.task_id, task.round, task.client_id, sha(data), len(data), at)


def traffic(client_id: str, up: int) -> TrafficRecord:
    return TrafficRecord(1, client_id, "SubmitUpdate", up, 7, T0 + 6, up)


@pytest.fixture
def running(state: State) -> State:
    """A state with a run, clients a, b, c and round 1 open with a task for each."""
    state.initialize_run(RUN, b"initial checkpoint")
    for c in ("c", "a", "b"):
        enroll(state, c)
    open_round(state, 1, ["c", "a", "b"])
    return state


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


# --- run -------------------------------------------------------------------------------------
def test_run_initialization_is_idempotent(state: State) -> None:
    assert state.get_run() is None
    with pytest.raises(StateError, match="no checkpoint"):
        state.latest_checkpoint()
    assert state.initialize_run(RUN, b"ckpt 0") == RUN
    other = replace(RUN, run_id="run-2", seed=7)
    assert state.initialize_run(other, b"other ckpt") == RUN
    assert state.get_run() == RUN
    assert state.latest_checkpoint() == (0, b"ckpt 0")


def test_records_are_copies(state: State) -> None:
    config: dict[str, Any] = {"nested": {"x": 1}}
    state.initialize_run(replace(RUN, config=config), b"")
    config["nested"]["x"] = 2  # the caller's dict, after the call
    got = state.get_run()
    assert got is not None
    assert got.config == {"nested": {"x": 1}}
    got.config["nested"]["x"] = 3  # a returned dict
    assert state.get_run() == replace(RUN, config={"nested": {"x": 1}})
    enroll(state, "a")
    seen = state.get_client("a")
    assert seen is not None
    seen.properties["os"] = "hacked"
    assert state.list_clients()[0].properties == {"os": "linux"}


# --- enrollment ------------------------------------------------------------------------------
def test_tokens_listed_oldest_first_and_unique(state: State) -> None:
    state.add_token(token("late", created=T0 + 2))
    state.add_token(token("early", created=T0))
    assert [t.note for t in state.list_tokens()] == ["for early", "for late"]
    with pytest.raises(StateError):
        state.add_token(token("late", created=T0 + 3))


def test_enroll_consumes_the_token(state: State) -> None:
    state.add_token(token("t", expires=T0 + 100))
    got = state.enroll(sha(b"t"), client("z"), T0 + 50)
    assert got == client("z")
    assert state.get_client("z") == client("z")
    assert state.get_client("nobody") is None
    (used,) = state.list_tokens()
    assert (used.used_at, used.used_by) == (T0 + 50, "z")
    enroll(state, "b")
    assert [c.client_id for c in state.list_clients()] == ["b", "z"]


def test_enroll_refuses_unknown_used_and_expired_tokens(state: State) -> None:
    with pytest.raises(TokenError, match="unknown"):
        state.enroll(sha(b"never issued"), client("a"), T0)
    state.add_token(token("once"))
    state.enroll(sha(b"once"), client("a"), T0)
    with pytest.raises(TokenError, match="used"):
        state.enroll(sha(b"once"), client("b"), T0)
    state.add_token(token("stale", expires=T0 + 10))
    with pytest.raises(TokenError, match="expired"):
        state.enroll(sha(b"stale"), client("c"), T0 + 10)  # expiry is exclusive
    assert [c.client_id for c in state.list_clients()] == ["a"]
    assert next(t for t in state.list_tokens() if t.note == "for stale").used_at is None


def test_client_exists_leaves_the_token_unused(state: State) -> None:
    enroll(state, "a")
    state.add_token(token("second"))
    with pytest.raises(ClientExists):
        state.enroll(sha(b"second"), client("a", at=T0 + 9), T0 + 9)
    second = next(t for t in state.list_tokens() if t.note == "for second")
    assert (second.used_at, second.used_by) == (None, None)
    assert state.get_client("a") == client("a")  # the first enrollment is untouched
    state.enroll(sha(b"second"), client("b"), T0 + 9)


def test_concurrent_enrollments_with_one_token_have_one_winner(state: State) -> None:
    state.add_token(token("shared"))
    results = race(8, lambda i: state.enroll(sha(b"shared"), client(f"c{i}"), T0))
    winners = [r for r in results if isinstance(r, ClientRecord)]
    assert len(winners) == 1, results
    assert all(isinstance(r, TokenError) for r in results if r not in winners), results
    assert [c.client_id for c in state.list_clients()] == [winners[0].client_id]
    assert state.list_tokens()[0].used_by == winners[0].client_id


def test_concurrent_enrollments_of_one_id_have_one_winner(state: State) -> None:
    for i in range(8):
        state.add_token(token(f"t{i}", created=T0 + i))
    results = race(8, lambda i: state.enroll(sha(f"t{i}".encode()), client("same"), T0))
    assert sum(isinstance(r, ClientRecord) for r in results) == 1, results
    assert sum(isinstance(r, ClientExists) for r in results) == 7, results
    assert sum(t.used_at is not None for t in state.list_tokens()) == 1


# --- clients ---------------------------------------------------------------------------------
def test_touch_client_updates_what_it_is_given(state: State) -> None:
    enroll(state, "a")
    state.touch_client("a", T0 + 20)
    assert state.get_client("a") == replace(client("a"), last_seen=T0 + 20)
    state.touch_client("a", T0 + 30, num_examples=42, properties={"gpu": True})
    assert state.get_client("a") == replace(
        client("a"), last_seen=T0 + 30, num_examples=42, properties={"gpu": True}
    )
    with pytest.raises(StateError, match="unknown client"):
        state.touch_client("ghost", T0)


def test_a_device_profile_survives_the_round_trip_exactly(state: State) -> None:
    from fedft.core.device import DeviceProfile

    profile = DeviceProfile(
        fwd_s=0.1234567890123, bwd_layer_s=1e-7, num_layers=30, memory_mb=81920.5,
        act_layer_mb=52.25, link_mbps=3.3, slowdown=4.0,
    )  # fmt: skip
    enroll(state, "a")
    state.touch_client("a", T0 + 5, properties=profile.to_properties())
    stored = state.get_client("a")
    assert stored is not None
    assert DeviceProfile.from_properties(stored.properties) == profile


# --- blobs -----------------------------------------------------------------------------------
def test_blobs_are_content_addressed_and_idempotent(state: State) -> None:
    data = bytes(range(256)) * 10
    digest = state.put_blob(data)
    assert digest == sha(data)
    assert state.put_blob(data) == digest
    assert state.get_blob(digest) == data
    assert state.get_blob(state.put_blob(b"")) == b""
    with pytest.raises(KeyError):
        state.get_blob(sha(b"absent"))


# --- rounds and tasks ------------------------------------------------------------------------
def test_open_round_stores_round_and_tasks(running: State) -> None:
    round_1 = running.get_round(1)
    assert round_1 == RoundRecord(1, ROUND_OPEN, T0 + 1, T0 + 61)
    assert running.list_rounds() == [round_1]
    assert running.get_round(2) is None
    tasks = running.tasks_for_round(1)
    assert [t.client_id for t in tasks] == ["a", "b", "c"]
    assert running.get_task("r1-b") == tasks[1]
    assert running.get_task("nope") is None
    assert [running.get_blob(s) for s in tasks[0].payload_shas] == [b"tensors 1", b"config 1 a"]
    assert tasks[1].payload_shas[0] == tasks[0].payload_shas[0]
    assert running.tasks_for_round(2) == []


def test_open_round_needs_the_next_number(running: State) -> None:
    for number in (0, 1, 3):
        with pytest.raises(StateError):
            running.open_round(RoundRecord(number, ROUND_OPEN, T0, T0 + 1), [], [])
    assert [r.round for r in running.list_rounds()] == [1]


@pytest.mark.parametrize("flaw", ["unknown client", "missing blob", "other round", "status"])
def test_open_round_with_a_bad_task_writes_nothing(running: State, flaw: str) -> None:
    payload = b"p2"
    # The first blob is stored already (round 1's tensors); the second comes with the round.
    task = TaskRecord("r2-a", 2, "a", (sha(b"tensors 1"), sha(payload)), T0)
    round_2 = RoundRecord(2, ROUND_OPEN, T0, T0 + 1)
    blobs = [payload]
    if flaw == "unknown client":
        task = replace(task, client_id="ghost")
    elif flaw == "missing blob":
        blobs = []
    elif flaw == "other round":
        task = replace(task, round=3)
    else:
        round_2 = replace(round_2, status=ROUND_DONE)
    with pytest.raises(StateError):
        running.open_round(round_2, [task], blobs)
    assert running.get_round(2) is None
    assert running.get_task("r2-a") is None


def test_extend_deadline_only_of_an_open_round(running: State) -> None:
    running.extend_deadline(1, T0 + 500)
    round_1 = running.get_round(1)
    assert round_1 is not None
    assert round_1.deadline == T0 + 500
    with pytest.raises(RoundClosed):
        running.extend_deadline(9, T0)
    running.close_round(1, T0 + 70, {}, b"c1")
    with pytest.raises(RoundClosed):
        running.extend_deadline(1, T0 + 900)


def test_add_tasks_to_an_open_round_keeps_their_tickets(running: State) -> None:
    data = b"async task a"
    task = TaskRecord("a-1", 1, "a", (sha(b"tensors 1"), sha(data)), T0 + 2, ticket=2**40 + 3)
    running.add_tasks(1, [task], [data])
    assert running.get_task("a-1") == task
    assert task in running.tasks_for_round(1)
    assert running.get_blob(sha(data)) == data


@pytest.mark.parametrize("flaw", ["unknown client", "missing blob", "other round", "duplicate"])
def test_add_tasks_with_a_bad_task_writes_nothing(running: State, flaw: str) -> None:
    good = TaskRecord("a-1", 1, "a", (sha(b"x"),), T0, ticket=1)
    bad = TaskRecord("a-2", 1, "a", (sha(b"x"),), T0, ticket=2)
    blobs = [b"x"]
    if flaw == "unknown client":
        bad = replace(bad, client_id="ghost")
    elif flaw == "missing blob":
        bad = replace(bad, payload_shas=(sha(b"absent"),))
    elif flaw == "other round":
        bad = replace(bad, round=2)
    else:
        bad = replace(bad, task_id="r1-a")
    with pytest.raises(StateError):
        running.add_tasks(1, [good, bad], blobs)
    assert running.get_task("a-1") is None
    assert running.get_task("a-2") is None


def test_add_tasks_needs_an_open_round(running: State) -> None:
    task = TaskRecord("a-9", 9, "a", (), T0, ticket=9)
    with pytest.raises(RoundClosed):
        running.add_tasks(9, [task], [])
    running.close_round(1, T0 + 70, {}, b"c1")
    with pytest.raises(RoundClosed):
        running.add_tasks(1, [replace(task, round=1)], [])
    assert running.get_task("a-9") is None


def test_an_update_may_join_a_round_after_its_tasks(running: State) -> None:
    """Under --mode async a task of round 1 is answered into whichever round is open."""
    task_a = running.tasks_for_round(1)[0]
    running.close_round(1, T0 + 70, {}, b"c1")
    running.open_round(RoundRecord(2, ROUND_OPEN, T0 + 70, T0 + 200), [], [])
    late = replace(update_for(task_a, b"late a"), round=2)
    running.add_update(late, b"late a")
    assert running.updates_for_round(2) == [late]
    assert running.updates_for_round(1) == []
    # Never into a round before its task's.
    data = b"early"
    early = TaskRecord("b-2", 2, "b", (sha(data),), T0, ticket=5)
    running.add_tasks(2, [early], [data])
    with pytest.raises(StateError, match="later round"):
        running.add_update(replace(update_for(early, data), round=1), data)


# --- updates ---------------------------------------------------------------------------------
def test_updates_are_kept_in_acceptance_order(running: State) -> None:
    tasks = {t.client_id: t for t in running.tasks_for_round(1)}
    accepted = []
    # Received times run backwards on purpose: the order is acceptance, not the clock.
    for i, c in enumerate(["b", "c", "a"]):
        data = f"update {c}".encode()
        update = update_for(tasks[c], data, at=T0 + 10 - i)
        running.add_update(update, data)
        accepted.append(update)
        assert running.get_blob(update.payload_sha) == data
    assert running.updates_for_round(1) == accepted
    assert running.updates_for_round(2) == []


def test_duplicate_update_keeps_the_first(running: State) -> None:
    task = running.tasks_for_round(1)[0]
    first = update_for(task, b"first")
    running.add_update(first, b"first")
    with pytest.raises(DuplicateUpdate):
        running.add_update(update_for(task, b"second"), b"second")
    with pytest.raises(DuplicateUpdate):
        running.add_update(first, b"first")
    assert running.updates_for_round(1) == [first]


def test_update_refusals(running: State) -> None:
    task_a, task_b, _ = running.tasks_for_round(1)
    good = update_for(task_a, b"u")
    with pytest.raises(StateError, match="unknown task"):
        running.add_update(replace(good, task_id="ghost"), b"u")
    with pytest.raises(StateError, match="another client"):
        running.add_update(replace(good, client_id="b"), b"u")
    with pytest.raises(StateError):
        running.add_update(replace(good, round=2), b"u")
    with pytest.raises(StateError, match="payload_sha"):
        running.add_update(good, b"not u")
    assert running.updates_for_round(1) == []
    running.close_round(1, T0 + 70, {}, b"c1")
    with pytest.raises(RoundClosed):
        running.add_update(update_for(task_b, b"late"), b"late")
    assert running.updates_for_round(1) == []
    with pytest.raises(KeyError):
        running.get_blob(sha(b"late"))  # nothing of a refused update is written


def test_concurrent_updates(running: State) -> None:
    tasks = running.tasks_for_round(1)
    results = race(6, lambda i: running.add_update(update_for(tasks[0], b"x%d" % i), b"x%d" % i))
    assert results.count(None) == 1, results
    assert sum(isinstance(r, DuplicateUpdate) for r in results) == 5, results
    results = race(2, lambda i: running.add_update(update_for(tasks[i + 1], b"%d" % i), b"%d" % i))
    assert results == [None, None]
    assert {u.task_id for u in running.updates_for_round(1)} == {t.task_id for t in tasks}


def test_add_updates_stores_the_good_items_and_returns_each_refusal(running: State) -> None:
    task_a, task_b, task_c = running.tasks_for_round(1)
    running.add_update(update_for(task_c, b"c first"), b"c first")
    items = [
        NewUpdate(update_for(task_b, b"b"), b"b", traffic("b", 1)),
        NewUpdate(replace(update_for(task_a, b"g"), task_id="ghost"), b"g", traffic("a", 2)),
        NewUpdate(update_for(task_a, b"a"), b"a", traffic("a", 3)),
        NewUpdate(update_for(task_a, b"a again"), b"a again", traffic("a", 4)),  # same batch
        NewUpdate(update_for(task_c, b"c again"), b"c again", traffic("c", 5)),  # stored before
        NewUpdate(update_for(task_b, b"x"), b"not x", traffic("b", 6)),
    ]
    outcomes = running.add_updates(items)
    assert [type(o) for o in outcomes] == [
        type(None),
        StateError,
        type(None),
        DuplicateUpdate,
        DuplicateUpdate,
        StateError,
    ]
    assert "unknown task" in str(outcomes[1])
    assert "payload_sha" in str(outcomes[5])
    stored = running.updates_for_round(1)
    assert [u.task_id for u in stored] == [task_c.task_id, task_b.task_id, task_a.task_id]
    # Only the stored items' traffic is recorded, with them and in their order.
    assert [t.bytes_up for t in running.list_traffic()] == [1, 3]
    with pytest.raises(KeyError):
        running.get_blob(sha(b"a again"))  # nothing of a refused item is written
    assert running.add_updates([]) == []


def test_add_updates_in_a_closed_round_are_refused(running: State) -> None:
    task = running.tasks_for_round(1)[0]
    running.close_round(1, T0 + 70, {}, b"c1")
    (outcome,) = running.add_updates([NewUpdate(update_for(task, b"late"), b"late")])
    assert isinstance(outcome, RoundClosed)
    assert running.updates_for_round(1) == []
    assert running.list_traffic() == []


def test_concurrent_batches_number_updates_without_gaps(running: State) -> None:
    for c in ("d", "e", "f"):
        enroll(running, c)
    tasks = open_round(running, 2, ["a", "b", "c", "d", "e", "f"])

    def batch(i: int) -> list[StateError | None]:
        pair = tasks[2 * i : 2 * i + 2]
        return running.add_updates(
            [NewUpdate(update_for(t, t.task_id.encode()), t.task_id.encode()) for t in pair]
        )

    assert race(3, batch) == [[None, None]] * 3
    assert len(running.updates_for_round(2)) == 6
    if isinstance(running, SqlState):  # seq is a SQL column; memory keeps insertion order
        with running._engine.connect() as conn:
            seqs = conn.execute(sa.select(s.updates.c.seq).where(s.updates.c.round == 2)).scalars()
            assert sorted(seqs) == [1, 2, 3, 4, 5, 6]


# --- closing and checkpoints -----------------------------------------------------------------
def test_close_round_appends_ledger_entries_in_its_transaction(running: State) -> None:
    entry = LedgerEntry(1, "gaussian", 1.0, 0.5, 1.0, 2, "add-remove", T0 + 70)
    running.close_round(1, T0 + 70, {}, b"checkpoint 1", [entry])
    assert running.ledger() == [entry]
    late = LedgerEntry(1, "gaussian", 1.0, 0.5, 1.0, 2, "add-remove", T0 + 80)
    with pytest.raises(RoundClosed):
        running.close_round(1, T0 + 80, {}, b"again", [late])
    assert running.ledger() == [entry]  # a refused close records no spending


def test_close_round_stores_metrics_and_checkpoint(running: State) -> None:
    assert running.latest_checkpoint() == (0, b"initial checkpoint")
    running.close_round(1, T0 + 70, {"loss": 0.5, "clients": ["a"]}, b"checkpoint 1")
    assert running.get_round(1) == RoundRecord(
        1, ROUND_DONE, T0 + 1, T0 + 61, T0 + 70, {"loss": 0.5, "clients": ["a"]}
    )
    assert running.latest_checkpoint() == (1, b"checkpoint 1")
    with pytest.raises(RoundClosed):
        running.close_round(1, T0 + 80, {}, b"again")
    with pytest.raises(RoundClosed):
        running.close_round(2, T0 + 80, {}, b"never opened")
    assert running.latest_checkpoint() == (1, b"checkpoint 1")
    open_round(running, 2, ["a"])
    running.close_round(2, T0 + 90, {}, b"initial checkpoint")  # same bytes as round 0: one blob
    assert running.latest_checkpoint() == (2, b"initial checkpoint")
    assert [r.status for r in running.list_rounds()] == [ROUND_DONE, ROUND_DONE]
    assert running.get_checkpoint(0) == b"initial checkpoint"
    assert running.get_checkpoint(1) == b"checkpoint 1"
    open_round(running, 3, ["a"])
    for number in (3, 4):  # open, never opened
        with pytest.raises(KeyError):
            running.get_checkpoint(number)


# --- accounting ------------------------------------------------------------------------------
def test_traffic_in_insertion_order_filtered_by_round(state: State) -> None:
    records = [
        TrafficRecord(r, f"c{i}", "Upload", 100 * i, 2**40 + i, T0 + i, 90 * i, 2**40)
        for i, r in enumerate([1, 0, 1, 2, 1])
    ]
    for record in records:
        state.add_traffic(record)
    assert state.list_traffic() == records
    assert state.list_traffic(1) == [records[0], records[2], records[4]]
    assert state.list_traffic(7) == []


def test_ledger_in_round_order(state: State) -> None:
    def entry(round_: int, mechanism: str) -> LedgerEntry:
        return LedgerEntry(round_, mechanism, 1.1, 0.5, 0.01, 10, "add-remove", T0 + round_)

    entries = [entry(2, "gaussian"), entry(1, "gaussian"), entry(1, "laplace")]
    for e in entries:
        state.append_ledger(e)
    assert state.ledger() == [entries[1], entries[2], entries[0]]
