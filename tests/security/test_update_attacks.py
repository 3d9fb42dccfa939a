"""Malformed and misplaced updates that already held: chunk order and hash, shapes, round, reuse."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import grpc
import pytest
import torch

from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.state.memory import InMemoryState

from .conftest import TIMEOUT, Attacker, Target, adapter, make_target, update_bytes


def send(who: Attacker, messages: list[pb.UpdateChunk]) -> grpc.StatusCode:
    """Send raw update messages; return the status the server ended the call with."""
    try:
        who.stub.SubmitUpdate(iter(messages), metadata=who.signed("SubmitUpdate"), timeout=TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def header(task: pb.TaskHeader, data: bytes, **changes: object) -> pb.UpdateChunk:
    fields: dict[str, object] = {
        "task_id": task.task_id,
        "round": task.round,
        "payload_size": len(data),
        "payload_sha256": hashlib.sha256(data).digest(),
    }
    fields.update(changes)
    return pb.UpdateChunk(header=pb.UpdateHeader(**fields))  # type: ignore[arg-type]


@pytest.fixture
def round_open(target: Target) -> tuple[Target, Attacker, pb.TaskHeader, bytes]:
    a = target.enrolled("edge-a")
    target.enrolled("edge-b")
    task, _ = a.fetch()
    return target, a, task, update_bytes(adapter(1))


def test_chunk_order_size_and_hash_are_enforced(
    round_open: tuple[Target, Attacker, pb.TaskHeader, bytes],
) -> None:
    target, a, task, data = round_open
    chunk = pb.UpdateChunk(data=data)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert send(a, [chunk, header(task, data)]) == invalid  # data before the header
    assert send(a, [header(task, data), header(task, data), chunk]) == invalid  # two headers
    assert send(a, [header(task, data, payload_sha256=b"\0" * 32), chunk]) == invalid
    assert send(a, [header(task, data, payload_size=len(data) - 1), chunk]) == invalid
    assert send(a, [header(task, data)]) == invalid  # the bytes never came
    assert target.state.updates_for_round(task.round) == []


def test_wrong_shapes_and_names_are_refused(
    round_open: tuple[Target, Attacker, pb.TaskHeader, bytes],
) -> None:
    target, a, task, _ = round_open
    for tensors in (
        {"m.lora_A": torch.zeros(3, 3), "m.lora_B": torch.zeros(16, 4)},
        {"other": torch.zeros(4, 16), "m.lora_B": torch.zeros(16, 4)},
        {"m.lora_A": torch.zeros(4, 16, dtype=torch.int32), "m.lora_B": torch.zeros(16, 4)},
    ):
        data = update_bytes(tensors)
        assert send(a, [header(task, data), pb.UpdateChunk(data=data)]) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
    assert target.state.updates_for_round(task.round) == []


def test_another_clients_task_and_a_wrong_round_are_refused(
    round_open: tuple[Target, Attacker, pb.TaskHeader, bytes],
) -> None:
    target, a, task, data = round_open
    b = target.attacker("edge-b")
    b.key = a.key  # even holding a's key, b's id signs nothing a's key verifies
    chunk = pb.UpdateChunk(data=data)
    assert send(b, [header(task, data), chunk]) == grpc.StatusCode.UNAUTHENTICATED
    assert send(a, [header(task, data, round=task.round + 1), chunk]) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert send(a, [header(task, data, task_id="no-such-task"), chunk]) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_a_second_update_for_one_task_is_a_duplicate(
    round_open: tuple[Target, Attacker, pb.TaskHeader, bytes],
) -> None:
    target, a, task, data = round_open
    a.submit(task, data)
    assert send(a, [header(task, data), pb.UpdateChunk(data=data)]) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    assert len(target.state.updates_for_round(task.round)) == 1


def test_an_update_after_its_round_closed_is_stale(certs: Path) -> None:
    target = make_target(certs, InMemoryState(), round_timeout_s=1.0)
    try:
        a = target.enrolled("edge-a")
        target.enrolled("edge-b")
        task, _ = a.fetch()
        for _ in range(600):  # the deadline closes the round; wait for it, bounded
            stored = target.state.get_round(task.round)
            if stored is not None and stored.status == "done":
                break
            time.sleep(0.05)
        data = update_bytes(adapter(1))
        assert send(a, [header(task, data), pb.UpdateChunk(data=data)]) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
    finally:
        target.stop()
