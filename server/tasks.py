"""How a round's tasks are stored: a shared tensor blob per distinct payload, a config blob each."""

from __future__ import annotations

import uuid

from fedft.core.payload import Payload
from fedft.core.serde import payload_to_bytes
from fedft.core.strategy import Task
from fedft.server.intake import sha_hex
from fedft.server.state.records import TaskRecord


def task_records(
    number: int, tasks: list[Task], now: float
) -> tuple[list[TaskRecord], list[bytes]]:
    """Store each task as a shared tensor blob plus its own small config blob.

    Serialized protobuf messages concatenate by merging, so ``tensors || config`` parses as the
    full payload; tasks that share tensors (every FedAvg client gets the same adapter) then share
    one blob instead of storing a copy per client.
    """
    records: list[TaskRecord] = []
    blobs: list[bytes] = []
    for task in tasks:
        tensors = payload_to_bytes(Payload(tensors=task.payload.tensors))
        rest = payload_to_bytes(Payload(config=task.payload.config, metrics=task.payload.metrics))
        parts = tuple(p for p in (tensors, rest) if p)
        blobs.extend(parts)
        shas = tuple(sha_hex(p) for p in parts)
        records.append(TaskRecord(uuid.uuid4().hex, number, task.client_id, shas, now))
    return records, blobs
