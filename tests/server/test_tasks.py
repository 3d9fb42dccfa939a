"""Task storage: tasks with the same tensors share one blob; each keeps its own config."""

from __future__ import annotations

import torch

from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes
from fedft.core.strategy import Task
from fedft.server.tasks import task_records


def test_shared_tensors_are_stored_once_and_each_task_reassembles() -> None:
    adapter = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    tasks = [
        Task(f"c{i}", Payload(tensors=adapter, config={"seed": i, "round": 3})) for i in range(3)
    ]
    records, blobs = task_records(3, tasks, now=12.0)
    assert [(r.round, r.client_id, r.created_at) for r in records] == [
        (3, "c0", 12.0),
        (3, "c1", 12.0),
        (3, "c2", 12.0),
    ]
    assert len({r.task_id for r in records}) == 3
    assert len({r.payload_shas[0] for r in records}) == 1  # one tensor blob for all
    assert len({r.payload_shas[1] for r in records}) == 3  # a config blob each
    by_sha = dict(zip([s for r in records for s in r.payload_shas], blobs, strict=True))
    for i, record in enumerate(records):
        payload = payload_from_bytes(b"".join(by_sha[s] for s in record.payload_shas))
        assert torch.equal(payload.tensors["a"], adapter["a"])
        assert payload.config == {"seed": i, "round": 3}


def test_a_task_without_tensors_has_only_its_config_blob() -> None:
    records, blobs = task_records(1, [Task("c0", Payload(config={"seed": 1}))], now=0.0)
    assert len(records[0].payload_shas) == 1
    assert payload_from_bytes(blobs[0]).config == {"seed": 1}
