"""The coordinator's gRPC service over TLS, driven by the real client ``Connection``."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch

from fedft.client.connection import SERVICE, Connection, NoTaskMessage, TaskMessage, profile_message
from fedft.client.tls import channel_credentials
from fedft.core.errors import UsageError
from fedft.core.identity import (
    HEADER_CLIENT_ID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    generate_key,
    hash_token,
    new_token,
    sign_request,
)
from fedft.core.payload import Payload
from fedft.core.sampling import client_seed
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.proto.v1 import coordinator_pb2_grpc as pb_grpc
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE, TokenRecord
from fedft.server.tls import init_certificates

SEED = 99
TIMEOUT = 60.0
MAX_UPDATE = 64 << 20
GRPC_DEFAULT_LIMIT = 4 << 20


class OffsetClock:
    """Real time plus a settable offset: the loop's waits stay real, deadlines can be jumped."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layers.0.q_proj.lora_A": torch.randn(4, 32, generator=g),
        "layers.0.q_proj.lora_B": torch.randn(32, 4, generator=g),
    }


def update(tensors: dict[str, torch.Tensor], num_examples: int = 10) -> bytes:
    return payload_to_bytes(Payload(tensors=tensors, metrics={"num_examples": num_examples}))


@dataclass
class Server:
    """A running coordinator service plus what a test needs to talk to it and inspect it."""

    service: CoordinatorService
    coordinator: Coordinator
    state: InMemoryState
    clock: OffsetClock
    ca: Path
    connections: list[Connection] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.service.port}"

    def connect(self) -> Connection:
        conn = Connection(self.address, credentials=channel_credentials(self.ca), timeout_s=10)
        self.connections.append(conn)
        return conn

    def token(self) -> str:
        token = new_token()
        self.state.add_token(TokenRecord(hash_token(token), time.time()))
        return token

    def enroll(self, client_id: str, num_examples: int = 10) -> Connection:
        conn = self.connect()
        assigned, _ = conn.enroll(
            self.token(), generate_key(), client_id, profile_message(num_examples, {})
        )
        assert assigned == client_id
        return conn

    def stop(self) -> None:
        for conn in self.connections:
            conn.close()
        self.service.stop(grace=0.5)

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a refused call must leave untouched (blobs included)."""
        state = self.state
        rounds = state.list_rounds()
        return (
            state.list_clients(),
            state.list_tokens(),
            rounds,
            [state.tasks_for_round(r.round) for r in rounds],
            [state.updates_for_round(r.round) for r in rounds],
            state.list_traffic(),
            sorted(state._blobs),
        )


Make = Callable[..., Coordinator]


def build_coordinator(
    make: Make,
    *,
    initial: dict[str, torch.Tensor] | None = None,
    rounds: int = 1,
    min_clients: int = 2,
) -> Coordinator:
    """This file's coordinator, in memory on its own `OffsetClock`, built by a conftest factory."""
    return make(
        None,
        OffsetClock(),
        options={"local_steps": 2},
        seed=SEED,
        model="synthetic-model",
        initial=adapter(0) if initial is None else initial,
        rounds=rounds,
        round_timeout_s=TIMEOUT,
        min_clients=min_clients,
        liveness_s=60.0,
        heartbeat_interval_s=2.5,
        max_update_bytes=MAX_UPDATE,
    )


def start(certs: Path, make: Make, *, model_dir: Path | None = None, **settings: Any) -> Server:
    coordinator = build_coordinator(make, **settings)
    service = CoordinatorService(
        coordinator, address="127.0.0.1:0", cert_dir=certs, model_dir=model_dir, max_workers=16
    )
    service.start()
    assert isinstance(coordinator.state, InMemoryState)
    assert isinstance(coordinator.clock, OffsetClock)
    return Server(service, coordinator, coordinator.state, coordinator.clock, certs / "ca.pem")


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    """Run a call (draining a response stream) and return the status code it ended with."""
    try:
        result = call()
        if isinstance(result, Iterator):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def raw_submit(
    conn: Connection, messages: Iterator[pb.UpdateChunk] | list[pb.UpdateChunk]
) -> pb.SubmitUpdateResponse:
    return conn.stub.SubmitUpdate(iter(messages), timeout=10, metadata=conn._signed("SubmitUpdate"))


def header(task: TaskMessage, data: bytes, **changes: Any) -> pb.UpdateChunk:
    fields: dict[str, Any] = {
        "task_id": task.task_id,
        "round": task.round,
        "payload_size": len(data),
        "payload_sha256": hashlib.sha256(data).digest(),
    }
    fields.update(changes)
    return pb.UpdateChunk(header=pb.UpdateHeader(**fields))


def fetch(conn: Connection) -> TaskMessage:
    task = conn.fetch_task(5.0)
    assert isinstance(task, TaskMessage), task
    return task


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    init_certificates(folder, ["127.0.0.1"])
    return folder


@pytest.fixture
def server_factory(certs: Path, make_coordinator: Make) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(**kwargs: Any) -> Server:
        server = start(certs, make_coordinator, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    (root / "secret").write_text("not for clients")
    folder = root / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.bin").write_bytes(os.urandom((5 << 20) + 12345))
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / "empty.txt").write_bytes(b"")
    return folder


@pytest.fixture(scope="module")
def shared(
    certs: Path, model_dir: Path, make_module_coordinator: Make
) -> Iterator[tuple[Server, Connection]]:
    """One server for tests that only read, or only get refused: no round ever starts on it."""
    server = start(certs, make_module_coordinator, min_clients=1000, model_dir=model_dir)
    conn = server.enroll("edge-shared", num_examples=3)
    yield server, conn
    server.stop()


@pytest.fixture(scope="module")
def open_round(
    certs: Path, make_module_coordinator: Make
) -> Iterator[tuple[Server, dict[str, Connection], dict[str, TaskMessage]]]:
    """Round 1 open with tasks for edge-a and edge-b; its tests must only see refusals."""
    server = start(certs, make_module_coordinator)
    conns = {c: server.enroll(c) for c in ("edge-a", "edge-b")}
    tasks = {c: fetch(conn) for c, conn in conns.items()}
    yield server, conns, tasks
    server.stop()


# --- authentication ----------------------------------------------------------------------------

EMPTY_SHA = hashlib.sha256(b"").digest()
SIGNED_CALLS: dict[str, Callable[[pb_grpc.CoordinatorStub, Any], Any]] = {
    "Heartbeat": lambda stub, md: stub.Heartbeat(pb.HeartbeatRequest(), metadata=md, timeout=5),
    "FetchTask": lambda stub, md: stub.FetchTask(
        pb.FetchTaskRequest(wait_ms=0), metadata=md, timeout=5
    ),
    "SubmitUpdate": lambda stub, md: stub.SubmitUpdate(
        iter([pb.UpdateChunk(header=pb.UpdateHeader(task_id="x", payload_sha256=EMPTY_SHA))]),
        metadata=md,
        timeout=5,
    ),
    "DownloadArtifact": lambda stub, md: stub.DownloadArtifact(
        pb.DownloadArtifactRequest(name="global"), metadata=md, timeout=5
    ),
    "GetStatus": lambda stub, md: stub.GetStatus(pb.GetStatusRequest(), metadata=md, timeout=5),
}


@pytest.mark.parametrize("method", sorted(SIGNED_CALLS))
def test_no_credentials_is_unauthenticated(shared: tuple[Server, Connection], method: str) -> None:
    server, conn = shared
    before = server.snapshot()
    assert code_of(lambda: SIGNED_CALLS[method](conn.stub, None)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert server.snapshot() == before


@pytest.mark.parametrize("method", sorted(SIGNED_CALLS))
def test_signed_calls_work(shared: tuple[Server, Connection], method: str) -> None:
    """The positive control of the refusals around it: the same calls, properly signed."""
    _, conn = shared
    # A well-formed, signed update for a task that does not exist is past authentication.
    expected = grpc.StatusCode.NOT_FOUND if method == "SubmitUpdate" else grpc.StatusCode.OK
    assert code_of(lambda: SIGNED_CALLS[method](conn.stub, conn._signed(method))) == expected


def test_wrong_key_is_unauthenticated(shared: tuple[Server, Connection]) -> None:
    server, _ = shared
    impostor = server.connect()
    impostor.use_identity("edge-shared", generate_key())
    before = server.snapshot()
    for method, call in SIGNED_CALLS.items():
        assert code_of(lambda: call(impostor.stub, impostor._signed(method))) == (  # noqa: B023
            grpc.StatusCode.UNAUTHENTICATED
        ), method
    assert server.snapshot() == before


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        pytest.param(HEADER_TIMESTAMP, lambda v: str(int(v) + 1), id="timestamp+1ms"),
        pytest.param(HEADER_TIMESTAMP, lambda v: str(int(v) - 1), id="timestamp-1ms"),
        pytest.param(HEADER_TIMESTAMP, lambda v: "0" + v, id="timestamp-leading-zero"),
        pytest.param(HEADER_NONCE, lambda v: ("1" if v[0] == "0" else "0") + v[1:], id="nonce"),
        pytest.param(
            HEADER_SIGNATURE, lambda v: v[:-1] + ("1" if v[-1] == "0" else "0"), id="signature"
        ),
        pytest.param(HEADER_SIGNATURE, str.upper, id="signature-upper-case"),
        pytest.param(HEADER_SIGNATURE, lambda v: "", id="signature-empty"),
        pytest.param(HEADER_CLIENT_ID, lambda v: "edge-other", id="client-id-other"),
        pytest.param(HEADER_CLIENT_ID, lambda v: "", id="client-id-empty"),
    ],
)
def test_tampered_metadata_is_unauthenticated(
    shared: tuple[Server, Connection], name: str, tamper: Callable[[str], str]
) -> None:
    server, conn = shared
    metadata = [(k, tamper(v) if k == name else v) for k, v in conn._signed("Heartbeat")]
    before = server.snapshot()
    assert code_of(lambda: SIGNED_CALLS["Heartbeat"](conn.stub, metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert server.snapshot() == before


def test_signature_for_another_method_is_unauthenticated(
    shared: tuple[Server, Connection],
) -> None:
    server, conn = shared
    before = server.snapshot()
    for method, call in SIGNED_CALLS.items():
        other = "GetStatus" if method != "GetStatus" else "Heartbeat"
        assert code_of(lambda: call(conn.stub, conn._signed(other))) == (  # noqa: B023
            grpc.StatusCode.UNAUTHENTICATED
        ), method
    assert server.snapshot() == before


def test_old_timestamp_is_unauthenticated(shared: tuple[Server, Connection]) -> None:
    server, conn = shared
    assert conn.key is not None
    before = server.snapshot()
    for skew in (-301.0, 301.0):
        metadata = sign_request(
            conn.key, SERVICE + "Heartbeat", conn.client_id, now=time.time() + skew
        )
        assert code_of(lambda: SIGNED_CALLS["Heartbeat"](conn.stub, metadata)) == (  # noqa: B023
            grpc.StatusCode.UNAUTHENTICATED
        )
    assert server.snapshot() == before


def test_replayed_request_is_unauthenticated(shared: tuple[Server, Connection]) -> None:
    server, conn = shared
    metadata = conn._signed("Heartbeat")
    assert code_of(lambda: SIGNED_CALLS["Heartbeat"](conn.stub, metadata)) == grpc.StatusCode.OK
    before = server.snapshot()
    assert code_of(lambda: SIGNED_CALLS["Heartbeat"](conn.stub, metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # From another channel too: the nonce, not the connection, is what is remembered.
    other = server.connect()
    assert code_of(lambda: SIGNED_CALLS["Heartbeat"](other.stub, metadata)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert server.snapshot() == before


def test_unknown_client_is_unauthenticated(shared: tuple[Server, Connection]) -> None:
    server, _ = shared
    stranger = server.connect()
    stranger.use_identity("edge-nobody", generate_key())
    before = server.snapshot()
    for method, call in SIGNED_CALLS.items():
        assert code_of(lambda: call(stranger.stub, stranger._signed(method))) == (  # noqa: B023
            grpc.StatusCode.UNAUTHENTICATED
        ), method
    assert server.snapshot() == before


def test_reused_token_is_unauthenticated(shared: tuple[Server, Connection]) -> None:
    server, _ = shared
    token = server.token()
    first = server.connect()
    first.enroll(token, generate_key(), "edge-token-1", profile_message(1, {}))
    before = server.snapshot()
    second = server.connect()
    with pytest.raises(grpc.RpcError) as info:
        second.enroll(token, generate_key(), "edge-token-2", profile_message(1, {}))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.state.get_client("edge-token-2") is None
    assert server.snapshot() == before


@pytest.mark.parametrize(
    ("client_id", "key_bytes", "code"),
    [
        ("Edge-Upper", 32, grpc.StatusCode.INVALID_ARGUMENT),
        ("edge-new", 16, grpc.StatusCode.INVALID_ARGUMENT),
        ("edge-shared", 32, grpc.StatusCode.ALREADY_EXISTS),
    ],
)
def test_refused_enrollment_keeps_the_token(
    shared: tuple[Server, Connection], client_id: str, key_bytes: int, code: grpc.StatusCode
) -> None:
    server, conn = shared
    token = server.token()
    before = server.snapshot()
    request = pb.EnrollRequest(token=token, public_key=os.urandom(key_bytes), client_id=client_id)
    assert code_of(lambda: conn.stub.Enroll(request, timeout=5)) == code
    assert server.snapshot() == before
    assert server.connect().enroll(token, generate_key(), "", profile_message(0, {}))[0]


def test_heartbeat_with_a_bad_profile_is_invalid_argument(
    shared: tuple[Server, Connection],
) -> None:
    server, conn = shared
    duplicate = pb.ClientProfile(num_examples=1)
    duplicate.properties.add(key="gb").value.float_value = 1.0
    duplicate.properties.add(key="gb").value.float_value = 2.0
    before = server.snapshot()
    for profile in (profile_message(-1, {}), duplicate):
        assert code_of(lambda: conn.heartbeat(profile)) == (  # noqa: B023
            grpc.StatusCode.INVALID_ARGUMENT
        )
    assert server.snapshot() == before


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", ":0", "10.0.0.1:0", "example.org:0"])
def test_insecure_is_refused_off_loopback(make_coordinator: Make, address: str) -> None:
    with pytest.raises(UsageError, match="loopback"):
        CoordinatorService(build_coordinator(make_coordinator), address=address, cert_dir=None)


def test_insecure_works_on_loopback(make_coordinator: Make) -> None:
    coordinator = build_coordinator(make_coordinator, min_clients=1000)
    token = new_token()
    coordinator.state.add_token(TokenRecord(hash_token(token), time.time()))
    service = CoordinatorService(coordinator, address="127.0.0.1:0", cert_dir=None)
    port = service.start()
    conn = Connection(f"127.0.0.1:{port}", credentials=None, timeout_s=5)
    try:
        conn.enroll(token, generate_key(), "edge-plain", profile_message(0, {}))
        assert conn.heartbeat().run.strategy == "fedavg_lora"
    finally:
        conn.close()
        service.stop(grace=0.5)


# --- refused updates ---------------------------------------------------------------------------


def _spoil(value: float) -> dict[str, torch.Tensor]:
    tensors = adapter(1)
    tensors["layers.0.q_proj.lora_B"][3, 1] = value
    return tensors


BAD_PAYLOADS = {
    "wrong shape": update({**adapter(1), "layers.0.q_proj.lora_A": torch.zeros(4, 31)}),
    "missing tensor": update({"layers.0.q_proj.lora_A": torch.zeros(4, 32)}),
    "nan": update(_spoil(float("nan"))),
    "inf": update(_spoil(float("inf"))),
    "-inf": update(_spoil(float("-inf"))),
    "no weight": payload_to_bytes(Payload(tensors=adapter(1))),
    "malformed": b"\x0a\xff\xff\xff\x0f" + b"\0" * 8,
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_invalid_update_is_invalid_argument(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]], case: str
) -> None:
    server, conns, tasks = open_round
    before = server.snapshot()
    with pytest.raises(grpc.RpcError) as info:
        conns["edge-a"].submit(tasks["edge-a"].task_id, 1, BAD_PAYLOADS[case])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.snapshot() == before


def test_update_for_someone_elses_task_is_permission_denied(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]],
) -> None:
    server, conns, tasks = open_round
    before = server.snapshot()
    with pytest.raises(grpc.RpcError) as info:
        conns["edge-b"].submit(tasks["edge-a"].task_id, 1, update(adapter(1)))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert server.snapshot() == before


@pytest.mark.parametrize(
    ("task_id", "round_number", "code"),
    [
        ("0" * 32, 1, grpc.StatusCode.NOT_FOUND),
        ("", 1, grpc.StatusCode.NOT_FOUND),
        (None, 2, grpc.StatusCode.INVALID_ARGUMENT),
        (None, -1, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_update_for_the_wrong_task_or_round(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]],
    task_id: str | None,
    round_number: int,
    code: grpc.StatusCode,
) -> None:
    server, conns, tasks = open_round
    before = server.snapshot()
    target = tasks["edge-a"].task_id if task_id is None else task_id
    with pytest.raises(grpc.RpcError) as info:
        conns["edge-a"].submit(target, round_number, update(adapter(1)))
    assert info.value.code() == code
    assert server.snapshot() == before


def test_oversize_update_is_refused_unread(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]],
) -> None:
    server, conns, tasks = open_round
    conn, task = conns["edge-a"], tasks["edge-a"]
    pulled = 0
    chunk = b"\0" * (1 << 20)

    def messages(size: int) -> Iterator[pb.UpdateChunk]:
        nonlocal pulled
        yield header(task, b"", payload_size=size, payload_sha256=b"\1" * 32)
        for _ in range(100_000):  # 100 GiB if anyone read it all
            pulled += 1
            yield pb.UpdateChunk(data=chunk)

    before = server.snapshot()
    for size in (MAX_UPDATE + 1, 1 << 40, (1 << 63) - 1):
        pulled = 0
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            raw_submit(conn, messages(size))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "exceeds the limit" in (info.value.details() or "")
        assert time.monotonic() - started < 5.0
        assert pulled < 200  # the refusal came after the header, not after the data
    assert server.snapshot() == before


@pytest.mark.parametrize(
    ("owner", "task_id", "code"),
    [
        ("edge-a", "f" * 32, grpc.StatusCode.NOT_FOUND),
        ("edge-b", None, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_a_refused_task_is_refused_before_its_bytes_are_read(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]],
    owner: str,
    task_id: str | None,
    code: grpc.StatusCode,
) -> None:
    server, conns, tasks = open_round
    task = tasks["edge-a"]
    pulled = 0

    def messages() -> Iterator[pb.UpdateChunk]:
        nonlocal pulled
        fields = {"task_id": task_id} if task_id else {}
        yield header(task, b"", payload_size=MAX_UPDATE, payload_sha256=b"\1" * 32, **fields)
        for _ in range(MAX_UPDATE >> 20):
            pulled += 1
            yield pb.UpdateChunk(data=b"\0" * (1 << 20))

    before = server.snapshot()
    with pytest.raises(grpc.RpcError) as info:
        raw_submit(conns[owner], messages())
    assert info.value.code() == code
    assert pulled < 50  # refused on the header: the upload was never buffered
    assert server.snapshot() == before


@pytest.mark.parametrize(
    "case",
    ["sha mismatch", "short sha", "more than announced", "less than announced", "negative size"],
)
def test_damaged_stream_is_invalid_argument(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]], case: str
) -> None:
    server, conns, tasks = open_round
    task, data = tasks["edge-a"], update(adapter(1))
    chunks = [pb.UpdateChunk(data=data[:100]), pb.UpdateChunk(data=data[100:])]
    if case == "sha mismatch":
        messages = [header(task, data, payload_sha256=hashlib.sha256(data + b"x").digest())]
    elif case == "short sha":
        messages = [header(task, data, payload_sha256=b"\0" * 16)]
    elif case == "more than announced":
        messages = [header(task, data, payload_size=len(data) - 1)]
    elif case == "less than announced":
        messages = [header(task, data, payload_size=len(data) + 1)]
    else:
        messages = [header(task, data, payload_size=-1)]
    before = server.snapshot()
    with pytest.raises(grpc.RpcError) as info:
        raw_submit(conns["edge-a"], messages + chunks)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.snapshot() == before


@pytest.mark.parametrize("case", ["empty", "data first", "two headers", "empty chunk"])
def test_misordered_stream_is_invalid_argument(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]], case: str
) -> None:
    server, conns, tasks = open_round
    task, data = tasks["edge-a"], update(adapter(1))
    good = [header(task, data), pb.UpdateChunk(data=data)]
    messages = {
        "empty": [],
        "data first": good[::-1],
        "two headers": [good[0], *good],
        "empty chunk": [good[0], pb.UpdateChunk(), good[1]],
    }[case]
    before = server.snapshot()
    with pytest.raises(grpc.RpcError) as info:
        raw_submit(conns["edge-a"], messages)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    if case in ("empty", "data first"):
        assert "must start with an UpdateHeader" in (info.value.details() or "")
    assert server.snapshot() == before


def test_stale_update_is_failed_precondition(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    conns = {c: server.enroll(c) for c in ("edge-a", "edge-b")}
    tasks = {c: fetch(conn) for c, conn in conns.items()}
    conns["edge-a"].submit(tasks["edge-a"].task_id, 1, update(adapter(1)))
    server.clock.offset = TIMEOUT + 1  # the deadline passes while edge-b trains
    # The round loop may close the round meanwhile, so compare what a refusal could add.
    late = update(adapter(2))
    accepted = server.state.updates_for_round(1)
    traffic = server.state.list_traffic()
    with pytest.raises(grpc.RpcError) as info:
        conns["edge-b"].submit(tasks["edge-b"].task_id, 1, late)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert server.state.updates_for_round(1) == accepted
    assert server.state.list_traffic() == traffic
    assert hashlib.sha256(late).hexdigest() not in server.state._blobs
    server.coordinator._notify()  # wake the loop rather than wait for its next look
    # The loop closes the round at its deadline with edge-b missing.
    assert server.service.wait(5.0)
    done = server.state.get_round(1)
    assert done is not None
    assert (done.status, done.metrics["updates"], done.metrics["missing"]) == (ROUND_DONE, 1, 1)
    with pytest.raises(grpc.RpcError) as info:
        conns["edge-b"].submit(tasks["edge-b"].task_id, 1, update(adapter(2)))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert server.state.updates_for_round(1) == accepted
    assert hashlib.sha256(late).hexdigest() not in server.state._blobs


def test_duplicate_update_is_already_exists(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    conns = {c: server.enroll(c) for c in ("edge-a", "edge-b")}
    task = fetch(conns["edge-a"])
    first, second = update(adapter(1), 3), update(adapter(2), 4)
    assert conns["edge-a"].submit(task.task_id, 1, first) == len(first)
    before = server.snapshot()
    for data in (second, first):
        with pytest.raises(grpc.RpcError) as info:
            conns["edge-a"].submit(task.task_id, 1, data)
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert server.snapshot() == before
    (stored,) = server.state.updates_for_round(1)
    assert server.state.get_blob(stored.payload_sha) == first
    # The answered task is no longer offered.
    assert isinstance(conns["edge-a"].fetch_task(0), NoTaskMessage)


# --- the happy path ----------------------------------------------------------------------------


def test_enroll_heartbeat_fetch_submit_aggregate(server_factory: Callable[..., Server]) -> None:
    server = server_factory(min_clients=1)
    conn = server.connect()
    client_id, run = conn.enroll(
        server.token(), generate_key(), "edge-1", profile_message(12, {"gb": 4.0})
    )
    assert client_id == "edge-1"
    assert (run.strategy, run.rounds, run.model) == ("fedavg_lora", 1, "synthetic-model")
    assert run.run_id == server.coordinator.run.run_id
    assert run.config["local_steps"] == 2
    beat = conn.heartbeat(profile_message(12, {"gb": 8.0}))
    assert beat.heartbeat_interval_ms == 2500
    assert not beat.finished
    client = server.state.get_client("edge-1")
    assert client is not None
    assert (client.num_examples, client.properties) == (12, {"gb": 8.0})

    task = fetch(conn)
    assert task.round == 1
    assert abs(task.deadline_unix_ms / 1000 - (time.time() + TIMEOUT)) < 5
    payload = payload_from_bytes(task.data)
    for name, tensor in adapter(0).items():
        assert torch.equal(payload.tensors[name], tensor)
    assert payload.config["seed"] == client_seed(SEED, 1, "edge-1")
    assert payload.config["round"] == 1

    data = update(adapter(7), 12)
    assert conn.submit(task.task_id, task.round, data) == len(data)
    assert server.service.wait(5.0)
    assert server.coordinator.finished()
    done = server.state.get_round(1)
    assert done is not None
    assert (done.status, done.metrics["updates"], done.metrics["accepted"]) == (ROUND_DONE, 1, 1)

    global_bytes = conn.download("global")
    assert global_bytes == server.coordinator.global_payload()
    for name, tensor in adapter(7).items():
        assert torch.equal(payload_from_bytes(global_bytes).tensors[name], tensor)

    assert conn.heartbeat().finished
    no_task = conn.fetch_task(5.0)
    assert isinstance(no_task, NoTaskMessage)
    assert no_task.finished

    status = conn.status()
    assert (status.run_id, status.strategy, status.rounds_total) == (run.run_id, "fedavg_lora", 1)
    assert (status.current_round, status.finished) == (1, True)
    (round_status,) = status.rounds
    assert (round_status.round, round_status.status) == (1, "done")
    assert (round_status.tasks, round_status.updates) == (1, 1)
    assert round_status.metrics["updates"] == 1
    assert round_status.bytes_up >= len(data)
    assert round_status.bytes_down >= len(task.data)
    (client_status,) = status.clients
    assert (client_status.client_id, client_status.num_examples) == ("edge-1", 12)
    assert client_status.alive

    traffic = server.state.list_traffic()
    fetches = [t for t in traffic if t.rpc == "FetchTask"]
    (submitted,) = [t for t in traffic if t.rpc == "SubmitUpdate"]
    fetched, empty = fetches  # the task, then the NoTask after the run finished
    assert (fetched.round, submitted.round) == (1, 1)
    assert (empty.payload_down, empty.bytes_down) == (
        0,
        pb.TaskChunk(no_task=pb.NoTask(retry_after_ms=1000, finished=True)).ByteSize(),
    )
    assert fetched.client_id == submitted.client_id == "edge-1"
    assert fetched.payload_down == len(task.data)
    assert fetched.bytes_down >= len(task.data)
    assert fetched.payload_up == 0
    assert submitted.payload_up == len(data)
    assert submitted.bytes_up >= len(data)
    assert submitted.bytes_down == pb.SubmitUpdateResponse(received_bytes=len(data)).ByteSize()
    rpcs = [t.rpc for t in traffic]
    assert rpcs[:2] == ["Enroll", "Heartbeat"]
    assert {"FetchTask", "SubmitUpdate", "DownloadArtifact"} <= set(rpcs)


def test_large_payloads_travel_in_chunks(server_factory: Callable[..., Server]) -> None:
    g = torch.Generator().manual_seed(3)
    big = {"big.lora_A": torch.randn(5_000_000, generator=g), "big.lora_B": torch.randn(8, 8)}
    server = server_factory(initial=big, min_clients=1)
    conn = server.enroll("edge-big")
    sizes: dict[str, list[int]] = {"down": [], "up": []}
    fetch_task, submit = conn.stub.FetchTask, conn.stub.SubmitUpdate

    def fetch_spy(request: Any, **kwargs: Any) -> Iterator[pb.TaskChunk]:
        for message in fetch_task(request, **kwargs):
            sizes["down"].append(message.ByteSize())
            yield message

    def submit_spy(messages: Iterator[pb.UpdateChunk], **kwargs: Any) -> Any:
        def counted() -> Iterator[pb.UpdateChunk]:
            for message in messages:
                sizes["up"].append(message.ByteSize())
                yield message

        return submit(counted(), **kwargs)

    conn.stub.FetchTask, conn.stub.SubmitUpdate = fetch_spy, submit_spy
    task = fetch(conn)
    assert len(task.data) > 20_000_000
    assert torch.equal(payload_from_bytes(task.data).tensors["big.lora_A"], big["big.lora_A"])
    new = {name: t + 1 for name, t in big.items()}
    data = update(new, 5)
    assert conn.submit(task.task_id, 1, data) == len(data)
    for direction in ("down", "up"):
        assert len(sizes[direction]) > 5, direction
        assert max(sizes[direction]) < GRPC_DEFAULT_LIMIT, direction
    assert server.service.wait(10.0)
    (fetched,) = [t for t in server.state.list_traffic() if t.rpc == "FetchTask"]
    assert fetched.payload_down == len(task.data)
    assert fetched.bytes_down == sum(sizes["down"])

    # A channel with gRPC's default 4 MiB receive limit gets the 20 MB global state too.
    channel = grpc.secure_channel(server.address, channel_credentials(server.ca))
    try:
        stub = pb_grpc.CoordinatorStub(channel)
        stream = stub.DownloadArtifact(
            pb.DownloadArtifactRequest(name="global"),
            metadata=conn._signed("DownloadArtifact"),
            timeout=10,
        )
        first, *rest = list(stream)
    finally:
        channel.close()
    blob = b"".join(m.data for m in rest)
    assert (first.header.name, first.header.size) == ("global", len(blob))
    assert first.header.sha256 == hashlib.sha256(blob).digest()
    assert torch.equal(payload_from_bytes(blob).tensors["big.lora_A"], new["big.lora_A"])


def test_model_artifacts(
    shared: tuple[Server, Connection], model_dir: Path, tmp_path: Path
) -> None:
    _, conn = shared
    manifest = json.loads(conn.download("model/manifest"))
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    assert manifest == {
        "files": [
            {
                "path": p.relative_to(model_dir).as_posix(),
                "size": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for p in files
        ]
    }
    for entry in manifest["files"]:
        got = conn.download("model/" + entry["path"])
        assert got == (model_dir / entry["path"]).read_bytes(), entry["path"]
    target = tmp_path / "copy" / "model.bin"
    conn.download_to("model/model.bin", target)
    assert target.read_bytes() == (model_dir / "model.bin").read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "model/../secret",
        "model/../model/config.json",
        "model/./config.json",
        "model/sub",
        "model/",
        "model/nope.bin",
        f"model/{'x' * 300}",
        "model//config.json",
        "config.json",
        "manifest",
        "",
        "global/",
        "../secret",
    ],
)
def test_unknown_artifacts_are_not_found(shared: tuple[Server, Connection], name: str) -> None:
    server, conn = shared
    traffic = server.state.list_traffic()
    assert code_of(lambda: conn.download(name)) == grpc.StatusCode.NOT_FOUND
    assert server.state.list_traffic() == traffic


def test_model_artifacts_need_a_model_dir(server_factory: Callable[..., Server]) -> None:
    server = server_factory(min_clients=1000)
    conn = server.enroll("edge-1")
    assert code_of(lambda: conn.download("model/manifest")) == grpc.StatusCode.NOT_FOUND
    assert payload_from_bytes(conn.download("global")).tensors.keys() == adapter(0).keys()


def test_status_lists_rounds_and_clients(
    open_round: tuple[Server, dict[str, Connection], dict[str, TaskMessage]],
) -> None:
    server, conns, _ = open_round
    status = conns["edge-b"].status()
    assert (status.strategy, status.model, status.rounds_total) == (
        "fedavg_lora",
        "synthetic-model",
        1,
    )
    assert (status.current_round, status.finished) == (1, False)
    (round_one,) = status.rounds
    assert (round_one.round, round_one.status, round_one.tasks, round_one.updates) == (
        1,
        "open",
        2,
        0,
    )
    assert round_one.bytes_down >= 2 * len(update(adapter(0)))
    assert [(c.client_id, c.num_examples, c.alive) for c in status.clients] == [
        ("edge-a", 10, True),
        ("edge-b", 10, True),
    ]
    seen = {c.client_id: c.last_seen for c in status.clients}
    for client in server.state.list_clients():
        assert abs(seen[client.client_id] - client.last_seen) < 0.002
