"""SQL state is durable: every write is seen by a second connection and survives SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from fedft.server.state import sql as sql_module
from fedft.server.state.base import State
from fedft.server.state.factory import open_state
from fedft.server.state.records import (
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
from fedft.server.state.sql_updates import store_updates

T0 = 1_800_000_000.25
RUN = RunRecord("run-1", "fedavg_lora", {"lr": 0.01}, 2**62 + 1, 3, "tiny", T0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def prepare(state: State, clients: list[str]) -> list[TaskRecord]:
    """A run, the clients enrolled, and round 1 open with one task each."""
    state.initialize_run(RUN, b"ckpt 0")
    for c in clients:
        state.add_token(TokenRecord(sha(c.encode()), T0, T0 + 1e6, note=c))
        state.enroll(sha(c.encode()), ClientRecord(c, b"key", T0, T0, 1, {"c": c}), T0 + 1)
    tasks = [TaskRecord(f"t-{c}", 1, c, (sha(b"shared"), sha(c.encode())), T0) for c in clients]
    blobs = [b"shared", *(c.encode() for c in clients)]
    state.open_round(RoundRecord(1, ROUND_OPEN, T0, T0 + 60), tasks, blobs)
    return tasks


def fill(state: State) -> None:
    """Write one of everything."""
    tasks = prepare(state, ["a", "b"])
    state.touch_client("a", T0 + 3, num_examples=9, properties={"k": [1]})
    state.add_token(TokenRecord(sha(b"spare"), T0 + 2))
    state.add_update(UpdateRecord(tasks[1].task_id, 1, "b", sha(b"ub"), 2, T0 + 4), b"ub")
    state.close_round(1, T0 + 70, {"m": 1.5}, b"ckpt 1")
    task = TaskRecord("t2", 2, "a", (sha(b"p2"),), T0 + 71)
    state.open_round(RoundRecord(2, ROUND_OPEN, T0 + 71, T0 + 99), [task], [b"p2"])
    state.extend_deadline(2, T0 + 1000)
    state.add_update(UpdateRecord("t2", 2, "a", sha(b"ua"), 2, T0 + 72), b"ua")
    state.add_traffic(TrafficRecord(1, "a", "Fetch", 1, 2, T0))
    state.add_traffic(TrafficRecord(2, "b", "Submit", 10, 20, T0, payload_up=8))
    state.append_ledger(LedgerEntry(1, "gaussian", 1.0, 1.0, 0.5, 2, "add-remove", T0))


def snapshot(state: State) -> dict[str, Any]:
    """Everything readable."""
    rounds = state.list_rounds()
    updates = [u for r in rounds for u in state.updates_for_round(r.round)]
    return {
        "run": state.get_run(),
        "tokens": state.list_tokens(),
        "clients": state.list_clients(),
        "rounds": rounds,
        "tasks": [state.tasks_for_round(r.round) for r in rounds],
        "updates": updates,
        "blobs": [state.get_blob(u.payload_sha) for u in updates],
        "checkpoint": state.latest_checkpoint(),
        "traffic": state.list_traffic(),
        "ledger": state.ledger(),
    }


def test_everything_reads_back_from_a_second_connection(sql_url: str) -> None:
    memory = open_state("memory")
    fill(memory)
    writer = open_state(sql_url)
    fill(writer)
    reader = open_state(sql_url)  # while the writer is still open
    try:
        assert snapshot(reader) == snapshot(memory)
    finally:
        writer.close()
        reader.close()


CHILD = """
import os, signal, sys
from fedft.server.state.factory import open_state
from fedft.server.state.records import UpdateRecord
state = open_state(sys.argv[1], create=False)
state.add_update(UpdateRecord(sys.argv[2], 1, sys.argv[3], sys.argv[4], 7, 1.0), b"payload")
os.kill(os.getpid(), signal.SIGKILL)  # nothing can be flushed or committed after this point
"""


def test_update_is_durable_once_add_update_returns(sql_url: str) -> None:
    state = open_state(sql_url)
    (task,) = prepare(state, ["a"])
    state.close()
    args = [sql_url, task.task_id, "a", sha(b"payload")]
    child = subprocess.run([sys.executable, "-c", CHILD, *args], env=dict(os.environ), check=False)
    assert child.returncode == -signal.SIGKILL
    after = open_state(sql_url, create=False)
    try:
        (update,) = after.updates_for_round(1)
        assert (update.task_id, update.payload_sha) == (task.task_id, sha(b"payload"))
        assert after.get_blob(update.payload_sha) == b"payload"
    finally:
        after.close()


CHILD_BATCH = """
import os, signal, sys
from fedft.server.state.factory import open_state
from fedft.server.state.records import NewUpdate, TrafficRecord, UpdateRecord
state = open_state(sys.argv[1], create=False)
items = [
    NewUpdate(UpdateRecord(t, 1, c, sha, 7, 1.0), b"payload", TrafficRecord(1, c, "S", 9, 1, 1.0))
    for t, c, sha in zip(sys.argv[2::3], sys.argv[3::3], sys.argv[4::3])
]
assert state.add_updates(items) == [None] * len(items)
os.kill(os.getpid(), signal.SIGKILL)  # nothing can be flushed or committed after this point
"""


def test_a_batch_is_durable_once_add_updates_returns(sql_url: str) -> None:
    state = open_state(sql_url)
    tasks = prepare(state, ["a", "b", "c"])
    state.close()
    args = [sql_url]
    for task in tasks:
        args += [task.task_id, task.client_id, sha(b"payload")]
    child = subprocess.run(
        [sys.executable, "-c", CHILD_BATCH, *args], env=dict(os.environ), check=False
    )
    assert child.returncode == -signal.SIGKILL
    after = open_state(sql_url, create=False)
    try:
        assert [u.task_id for u in after.updates_for_round(1)] == [t.task_id for t in tasks]
        assert [t.client_id for t in after.list_traffic()] == ["a", "b", "c"]
    finally:
        after.close()


def batch(tasks: list[TaskRecord]) -> list[NewUpdate]:
    return [
        NewUpdate(
            UpdateRecord(t.task_id, 1, t.client_id, sha(t.task_id.encode()), 3, T0 + 5),
            t.task_id.encode(),
            TrafficRecord(1, t.client_id, "SubmitUpdate", 10, 2, T0 + 5),
        )
        for t in tasks
    ]


def test_a_constraint_error_in_a_batch_retries_each_item_alone(
    sql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = open_state(sql_url)
    tasks = prepare(state, ["a", "b", "c"])
    calls: list[int] = []

    def racing(conn: Any, items: Any, digests: Any) -> Any:
        calls.append(len(items))
        outcomes = store_updates(conn, items, digests)
        if len(items) > 1:  # as if a racing writer took a key: the whole transaction fails
            raise IntegrityError("INSERT", {}, Exception("simulated key violation"))
        return outcomes

    monkeypatch.setattr(sql_module, "store_updates", racing)
    try:
        assert state.add_updates(batch(tasks)) == [None, None, None]
        assert calls == [3, 1, 1, 1]
        assert [u.task_id for u in state.updates_for_round(1)] == [t.task_id for t in tasks]
        assert len(state.list_traffic()) == 3  # the failed batch left nothing behind
    finally:
        state.close()


def test_a_failing_commit_stores_nothing(sql_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    state = open_state(sql_url)
    tasks = prepare(state, ["a", "b"])

    def failing(conn: Any, items: Any, digests: Any) -> Any:
        store_updates(conn, items, digests)
        raise OperationalError("COMMIT", {}, Exception("simulated disk I/O error"))

    monkeypatch.setattr(sql_module, "store_updates", failing)
    try:
        with pytest.raises(OperationalError):
            state.add_updates(batch(tasks))
        assert state.updates_for_round(1) == []
        assert state.list_traffic() == []
        with pytest.raises(KeyError):
            state.get_blob(sha(tasks[0].task_id.encode()))
    finally:
        state.close()
