"""Fault tests with real processes and real signals: kill -9 the coordinator or a client."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from fedft.client.connection import Connection, NoTaskMessage, TaskMessage, profile_message
from fedft.core.identity import generate_key, hash_token, new_token
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.server.state.factory import open_state
from fedft.server.state.records import ROUND_DONE, TokenRecord

from .conftest import Processes, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def make_tokens(db: str, count: int) -> list[str]:
    state = open_state(db)
    tokens = [new_token() for _ in range(count)]
    for token in tokens:
        state.add_token(TokenRecord(hash_token(token), time.time()))
    state.close()
    return tokens


def serve_args(db: str, port: int, *extra: str) -> list[str]:
    return [
        "serve", "--model", "tiny", "--db", db, "--bind", f"127.0.0.1:{port}", "--insecure",
        "--linger", "2", "--heartbeat", "1", *extra,
    ]  # fmt: skip


def client_args(port: int, token: str, cid: str, data: Path, state_dir: Path) -> list[str]:
    return [
        "client", "--server", f"127.0.0.1:{port}", "--insecure", "--token", token,
        "--client-id", cid, "--data", str(data), "--state-dir", str(state_dir),
        "--poll", "1", "--max-backoff", "1",
    ]  # fmt: skip


def round_done(db: str, number: int) -> Callable[[], bool]:
    def check() -> bool:
        state = open_state(db)
        try:
            record = state.get_round(number)
            return record is not None and record.status == ROUND_DONE
        finally:
            state.close()

    return check


def echo_update(task: TaskMessage) -> bytes:
    """A valid fedavg_lora update: the task's adapter back, with an example count."""
    payload = payload_from_bytes(task.data)
    return payload_to_bytes(Payload(tensors=payload.tensors, metrics={"num_examples": 5}))


def fetch_until_task(connection: Connection, timeout: float) -> TaskMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = connection.fetch_task(1.0)
        except grpc.RpcError:
            time.sleep(0.5)
            continue
        if not isinstance(message, NoTaskMessage):
            return message
    raise AssertionError("no task arrived")


def submit_retrying(connection: Connection, task: TaskMessage, data: bytes) -> None:
    """Submit through a coordinator that may be restarting (resyncing the replay clock)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            connection.submit(task.task_id, task.round, data)
            return
        except grpc.RpcError as exc:
            # A restarted coordinator refuses stamps up to its replay floor and says its time;
            # like the daemon, the connection adopts it and signs again.
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED and connection.resync(exc):
                continue
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_coordinator_killed_mid_round_loses_no_acknowledged_update(
    tmp_path: Path, processes: Processes, client_data: Callable[[int], Path]
) -> None:
    db = f"sqlite:///{tmp_path / 'coordinator.db'}"
    tokens = make_tokens(db, 3)
    port = free_port()
    args = serve_args(db, port, "--rounds", "2", "--min-clients", "3", "--round-timeout", "300")
    coordinator = processes.start("coordinator", *args)
    wait_until(lambda: "listening on" in processes.log("coordinator"), 120, "the coordinator")
    for k in (0, 1):
        processes.start(
            f"client-{k}",
            *client_args(port, tokens[k], f"client-{k}", client_data(k), tmp_path / f"s{k}"),
        )
    # The third client is this test, so it can hold its update back while we kill the server.
    held = Connection(f"127.0.0.1:{port}", credentials=None, timeout_s=10)
    held.enroll(tokens[2], generate_key(), "held", profile_message(5, {}))
    task = fetch_until_task(held, 180)
    state = open_state(db)
    wait_until(lambda: len(state.updates_for_round(1)) == 2, 180, "two acknowledged updates")
    acknowledged = {u.task_id for u in state.updates_for_round(1)}

    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(timeout=30)
    processes.start("coordinator-restarted", *args)
    wait_until(lambda: "listening on" in processes.log("coordinator-restarted"), 120, "the restart")

    # The held client's task survived the crash; its update completes the round.
    submit_retrying(held, task, echo_update(task))
    wait_until(round_done(db, 1), 60, "round 1 to complete after the restart")
    stored = {u.task_id for u in state.updates_for_round(1)}
    assert acknowledged <= stored
    assert len(stored) == 3
    round_one = state.get_round(1)
    assert round_one is not None
    assert round_one.metrics["accepted"] == 3

    # The daemons reconnected on their own; round 2 runs to the end of the run.
    second = fetch_until_task(held, 120)
    held.submit(second.task_id, second.round, echo_update(second))
    wait_until(round_done(db, 2), 120, "round 2")
    for k in (0, 1):
        wait_until(lambda k=k: "the run is finished" in processes.log(f"client-{k}"), 60, "exit")
    held.close()
    state.close()


def test_client_killed_mid_training_rejoins_and_the_round_closes_by_deadline(
    tmp_path: Path, processes: Processes, client_data: Callable[[int], Path]
) -> None:
    db = f"sqlite:///{tmp_path / 'coordinator.db'}"
    tokens = make_tokens(db, 3)
    port = free_port()
    # 80 steps keep the victim busy when it is killed; the deadline leaves the two survivors
    # room to finish theirs even on a loaded 2-core machine (25 s was too tight there).
    processes.start(
        "coordinator",
        *serve_args(db, port, "--rounds", "2", "--min-clients", "3", "--round-timeout", "60",
                    "--opt", "local_steps=80"),
    )  # fmt: skip
    wait_until(lambda: "listening on" in processes.log("coordinator"), 120, "the coordinator")
    victim_args = client_args(port, tokens[2], "victim", client_data(2), tmp_path / "victim")
    for k in (0, 1):
        processes.start(
            f"client-{k}",
            *client_args(port, tokens[k], f"client-{k}", client_data(k), tmp_path / f"s{k}"),
        )
    victim = processes.start("victim", *victim_args)
    wait_until(lambda: "round 1: training" in processes.log("victim"), 180, "the victim to train")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)

    # Nobody waits for the dead client beyond the round's deadline.
    wait_until(round_done(db, 1), 120, "round 1 to close at its deadline")
    state = open_state(db)
    round_one = state.get_round(1)
    assert round_one is not None
    assert round_one.metrics["missing"] == 1
    assert {u.client_id for u in state.updates_for_round(1)} == {"client-0", "client-1"}

    # Restarted with the same state folder, the client rejoins without a new token.
    processes.start("victim-restarted", *victim_args[: victim_args.index("--token")],
                    *victim_args[victim_args.index("--token") + 2 :])  # fmt: skip
    wait_until(round_done(db, 2), 180, "round 2")
    assert "victim" in {u.client_id for u in state.updates_for_round(2)}
    assert "enrolled as" not in processes.log("victim-restarted")
    wait_until(lambda: "the run is finished" in processes.log("victim-restarted"), 60, "exit")
    state.close()


def test_async_coordinator_killed_between_acknowledgements_loses_nothing(
    tmp_path: Path, processes: Processes
) -> None:
    db = f"sqlite:///{tmp_path / 'coordinator.db'}"
    tokens = make_tokens(db, 3)
    port = free_port()
    args = serve_args(db, port, "--rounds", "2", "--mode", "async", "--buffer", "3")
    coordinator = processes.start("coordinator", *args)
    wait_until(lambda: "listening on" in processes.log("coordinator"), 120, "the coordinator")
    clients = []
    for k, token in enumerate(tokens):
        connection = Connection(f"127.0.0.1:{port}", credentials=None, timeout_s=10)
        connection.enroll(token, generate_key(), f"c{k}", profile_message(5, {}))
        clients.append(connection)
    tasks = [fetch_until_task(c, 60) for c in clients]
    assert {t.round for t in tasks} == {1}  # every task built from version 0
    for connection, task in zip(clients[:2], tasks[:2], strict=True):
        connection.submit(task.task_id, task.round, echo_update(task))
    state = open_state(db)
    acknowledged = {u.task_id for u in state.updates_for_round(1)}
    assert len(acknowledged) == 2

    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait(timeout=30)
    # A run keeps its mode for life: a synchronous restart is refused in one line.
    wrong = processes.start("coordinator-sync", *serve_args(db, port, "--rounds", "2"))
    assert wrong.wait(timeout=120) == 2
    assert "restart it with --mode async --buffer 3" in processes.log("coordinator-sync")
    processes.start("coordinator-restarted", *args)
    wait_until(lambda: "listening on" in processes.log("coordinator-restarted"), 120, "the restart")

    # The third task, handed out before the crash, completes version 1 after it.
    submit_retrying(clients[2], tasks[2], echo_update(tasks[2]))
    wait_until(round_done(db, 1), 60, "version 1 after the restart")
    assert acknowledged < {u.task_id for u in state.updates_for_round(1)}
    version_one = state.get_round(1)
    assert version_one is not None
    assert version_one.metrics["accepted"] == 3
    for connection in clients:
        task = fetch_until_task(connection, 60)
        assert task.round == 2
        submit_retrying(connection, task, echo_update(task))
    wait_until(round_done(db, 2), 60, "version 2")
    for connection in clients:
        connection.close()
    state.close()
