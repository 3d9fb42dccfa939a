"""FedKSeed's per-client traffic with K=4096 and 200 local steps, framed as the wire frames it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import torch

from fedft.core.chunking import DEFAULT_CHUNK_BYTES, iter_chunks, sha256
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.fedkseed import FedKSeedClient, FedKSeedConfig, FedKSeedServer

BUDGET = 18_000  # bytes per client per round, up + down (the FedKSeed paper's title)


def task_stream_bytes(data: bytes, round_number: int) -> int:
    """Bytes of the FetchTask exchange that carries ``data``: request, header, data chunks."""
    header = pb.TaskChunk(
        header=pb.TaskHeader(
            task_id=uuid.uuid4().hex,
            round=round_number,
            payload_size=len(data),
            payload_sha256=sha256(data),
            deadline_unix_ms=int(time.time() * 1000) + 600_000,
        )
    )
    chunks = [pb.TaskChunk(data=c) for c in iter_chunks(data, DEFAULT_CHUNK_BYTES)]
    request = pb.FetchTaskRequest(wait_ms=30_000)
    return request.ByteSize() + header.ByteSize() + sum(c.ByteSize() for c in chunks)


def update_stream_bytes(data: bytes, round_number: int) -> int:
    """Bytes of the SubmitUpdate exchange that carries ``data``: header, chunks, response."""
    header = pb.UpdateChunk(
        header=pb.UpdateHeader(
            task_id=uuid.uuid4().hex,
            round=round_number,
            payload_size=len(data),
            payload_sha256=sha256(data),
        )
    )
    chunks = [pb.UpdateChunk(data=c) for c in iter_chunks(data, DEFAULT_CHUNK_BYTES)]
    response = pb.SubmitUpdateResponse(received_bytes=len(data))
    return header.ByteSize() + sum(c.ByteSize() for c in chunks) + response.ByteSize()


def test_k4096_with_200_steps_stays_under_18_kilobytes(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    config = FedKSeedConfig(seeds=4096, local_steps=200, batch_size=1, lr=1e-5)
    server = FedKSeedServer(config, seed=0)
    client = FedKSeedClient(config)
    examples = [Example(f"question {i}?", f"answer {i}.") for i in range(16)]
    trainer = LocalTrainer(tiny_bundle(), examples, max_length=32)
    client.prepare(trainer)
    server.initialize(client.initial_state(trainer))
    # Worst case for the downlink: a long run in which every one of the K seeds has been used,
    # and a client that has never synced, so the delta is dense.
    assert server.store is not None
    server.store.commit(torch.randn(server.store.shape, dtype=torch.float64) * 1e-6, 1)

    task = server.configure(2, [ClientInfo("new", len(examples))])[0]
    down_data = payload_to_bytes(task.payload)
    assert "d" in task.payload.tensors  # dense: 4096 fp32 values
    reply = client.run(payload_from_bytes(down_data), Payload(), trainer)
    up_data = payload_to_bytes(reply)
    assert server.check_update(2, Result("new", payload_from_bytes(up_data))) is None

    down = task_stream_bytes(down_data, 2)
    up = update_stream_bytes(up_data, 2)
    print(f"fedkseed K=4096, 200 steps: down {down} B, up {up} B, total {down + up} B")
    assert len(down_data) >= 4096 * 4
    assert len(up_data) >= 200 * 4
    assert down + up <= BUDGET
