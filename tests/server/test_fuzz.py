"""Random and hostile traffic at every RPC: each call ends with a status and the server survives."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedft.client.connection import SERVICE, Connection, TaskMessage, profile_message
from fedft.client.tls import channel_credentials
from fedft.core.identity import (
    HEADERS,
    generate_key,
    hash_token,
    new_token,
    sign_request,
)
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.proto.v1 import payload_pb2
from fedft.server.admission import AdmissionSettings
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import ROUND_DONE, TokenRecord
from fedft.server.tls import init_certificates

CLIENT = "edge-fuzz"
UNARY = ("Enroll", "Heartbeat", "GetStatus", "SecAggStep")
SERVER_STREAMING = ("FetchTask", "DownloadArtifact")
CLIENT_STREAMING = ("SubmitUpdate",)
METHODS = UNARY + SERVER_STREAMING + CLIENT_STREAMING
INT64 = st.integers(-(2**63), 2**63 - 1)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
# Every call must end with a status the service chose. UNKNOWN would mean a handler raised
# something it did not expect; INTERNAL, that gRPC failed to decode bytes for us (defect 9).
EXPECTED = set(grpc.StatusCode) - {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def adapter() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.lora_A": torch.randn(4, 8, generator=g), "a.lora_B": torch.randn(8, 4, generator=g)}


@dataclass
class Fuzzed:
    service: CoordinatorService
    state: InMemoryState
    conn: Connection
    channel: grpc.Channel
    task: TaskMessage
    address: str
    ca: Path
    codes: dict[str, list[grpc.StatusCode]]
    silent: Connection

    def signed(self, method: str) -> list[tuple[str, str]]:
        assert self.conn.key is not None
        return sign_request(self.conn.key, SERVICE + method, CLIENT)

    def call(self, method: str, body: Any, metadata: list[tuple[str, str]] | None) -> None:
        """Send raw bytes (or, for SubmitUpdate, a list of raw messages); record the status."""
        path = SERVICE + method
        try:
            if method in UNARY:
                self.channel.unary_unary(path)(body, metadata=metadata, timeout=10)
            elif method in SERVER_STREAMING:
                for _ in self.channel.unary_stream(path)(body, metadata=metadata, timeout=10):
                    pass
            else:
                self.channel.stream_unary(path)(iter(body), metadata=metadata, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        assert code in EXPECTED, (method, code)
        self.codes.setdefault(method, []).append(code)


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, make_module_coordinator: Callable[..., Coordinator]
) -> Iterator[Fuzzed]:
    """A coordinator with round 1 open and one task, for ``edge-fuzz``, that stays unanswered.

    A second, silent client holds the round's other task: a refused update completes its own
    task (the host rule), so without it the first refusal would let the round close.
    """
    certs = tmp_path_factory.mktemp("certs")
    init_certificates(certs, ["127.0.0.1"])
    model_dir = tmp_path_factory.mktemp("model")
    (model_dir / "config.json").write_text("{}")
    state = InMemoryState()
    coordinator = make_module_coordinator(
        state,
        seed=5,
        initial=adapter(),
        rounds=1,
        round_timeout_s=600,
        min_clients=2,
        max_update_bytes=1 << 20,
    )
    service = CoordinatorService(
        coordinator,
        address="127.0.0.1:0",
        cert_dir=certs,
        model_dir=model_dir,
        max_workers=16,
        # Hypothesis calls far faster than any client: the rate limit would answer instead.
        admission=AdmissionSettings(client_rate=1e6, client_burst=1e6),
    )
    port = service.start()
    address = f"127.0.0.1:{port}"
    conn = Connection(address, credentials=channel_credentials(certs / "ca.pem"), timeout_s=10)
    token = new_token()
    state.add_token(TokenRecord(hash_token(token), time.time()))
    conn.enroll(token, generate_key(), CLIENT, profile_message(10, {}))
    silent = Connection(address, credentials=channel_credentials(certs / "ca.pem"), timeout_s=10)
    other = new_token()
    state.add_token(TokenRecord(hash_token(other), time.time()))
    silent.enroll(other, generate_key(), "silent", profile_message(10, {}))
    task = conn.fetch_task(5.0)
    assert isinstance(task, TaskMessage)
    channel = grpc.secure_channel(
        address,
        channel_credentials(certs / "ca.pem"),
        options=[("grpc.max_send_message_length", 8 << 20)],
    )
    yield Fuzzed(service, state, conn, channel, task, address, certs / "ca.pem", {}, silent)
    channel.close()
    conn.close()
    silent.close()
    service.stop(grace=0.5)


# --- random bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", UNARY + SERVER_STREAMING)
@FUZZ
@given(body=st.binary(max_size=600))
def test_random_bytes(fuzzed: Fuzzed, method: str, body: bytes) -> None:
    fuzzed.call(method, body, None)
    fuzzed.call(method, body, fuzzed.signed(method))


@FUZZ
@given(bodies=st.lists(st.binary(max_size=300), max_size=6))
def test_random_update_streams(fuzzed: Fuzzed, bodies: list[bytes]) -> None:
    fuzzed.call("SubmitUpdate", bodies, None)
    fuzzed.call("SubmitUpdate", bodies, fuzzed.signed("SubmitUpdate"))


PRINTABLE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=140)


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    values=st.fixed_dictionaries({}, optional=dict.fromkeys(HEADERS, PRINTABLE)),
    keep=st.sets(st.sampled_from(HEADERS)),
)
def test_random_metadata(
    fuzzed: Fuzzed, method: str, values: dict[str, str], keep: set[str]
) -> None:
    """Forged or partial signature headers, some of them taken from a valid signature."""
    signed = dict(fuzzed.signed(method))
    metadata = {**values, **{k: signed[k] for k in keep}}
    body: Any = [pb.UpdateChunk().SerializeToString()] if method == "SubmitUpdate" else b""
    before = fuzzed.state.list_traffic()
    fuzzed.call(method, body, list(metadata.items()))
    if method != "Enroll" and keep != set(HEADERS):
        assert fuzzed.state.list_traffic() == before  # refused before anything was done


# --- hostile messages --------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.builds(payload_pb2.Number, int_value=INT64),
    st.builds(payload_pb2.Number, float_value=st.floats()),
    st.just(payload_pb2.Number()),  # no value at all
)
PROFILES = st.builds(
    pb.ClientProfile,
    num_examples=INT64,
    properties=st.lists(
        st.builds(payload_pb2.NumberEntry, key=st.text(max_size=8), value=NUMBERS), max_size=4
    ),
)


@FUZZ
@given(
    token=st.one_of(st.text(max_size=60), st.just("")),
    public_key=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    client_id=st.one_of(
        st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True), st.text(max_size=70)
    ),
    profile=PROFILES,
)
def test_hostile_enrollments(
    fuzzed: Fuzzed, token: str, public_key: bytes, client_id: str, profile: pb.ClientProfile
) -> None:
    request = pb.EnrollRequest(
        token=token, public_key=public_key, client_id=client_id, profile=profile
    )
    before = fuzzed.state.list_clients()
    fuzzed.call("Enroll", request.SerializeToString(), None)
    assert fuzzed.state.list_clients() == before  # no token was ever valid


@FUZZ
@given(profile=st.one_of(st.none(), PROFILES))
def test_hostile_heartbeats(fuzzed: Fuzzed, profile: pb.ClientProfile | None) -> None:
    request = pb.HeartbeatRequest(profile=profile) if profile is not None else pb.HeartbeatRequest()
    fuzzed.call("Heartbeat", request.SerializeToString(), fuzzed.signed("Heartbeat"))
    client = fuzzed.state.get_client(CLIENT)
    assert client is not None
    assert client.num_examples >= 0  # refused like a negative count at enrollment


@FUZZ
@given(
    wait_ms=st.one_of(INT64, st.integers(-10, 10)),
    name=st.one_of(
        st.text(max_size=40),
        st.sampled_from(["global", "model/manifest", "model/config.json", "model/../x"]),
    ),
)
def test_hostile_fetches_and_downloads(fuzzed: Fuzzed, wait_ms: int, name: str) -> None:
    started = time.monotonic()
    fetch = pb.FetchTaskRequest(wait_ms=wait_ms).SerializeToString()
    fuzzed.call("FetchTask", fetch, fuzzed.signed("FetchTask"))
    assert time.monotonic() - started < 5  # the open task is returned at once, whatever the wait
    download = pb.DownloadArtifactRequest(name=name).SerializeToString()
    fuzzed.call("DownloadArtifact", download, fuzzed.signed("DownloadArtifact"))


def _headers(real_task: str, real_size: int) -> st.SearchStrategy[pb.UpdateChunk]:
    return st.builds(
        lambda task_id, round_, size, sha: pb.UpdateChunk(
            header=pb.UpdateHeader(
                task_id=task_id, round=round_, payload_size=size, payload_sha256=sha
            )
        ),
        task_id=st.one_of(st.just(real_task), st.just(""), st.text(max_size=40)),
        round_=st.one_of(st.just(1), INT64),
        size=st.one_of(
            st.just(real_size), st.integers(-5, 5), INT64, st.sampled_from([1 << 20, 2**63 - 1])
        ),
        sha=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
    )


@FUZZ
@given(data=st.data())
def test_hostile_update_streams(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Headers with random fields, data before headers, repeated and empty parts."""
    part = st.one_of(
        _headers(fuzzed.task.task_id, 64),
        st.builds(lambda b: pb.UpdateChunk(data=b), st.binary(max_size=128)),
        st.just(pb.UpdateChunk()),
        st.just(pb.UpdateChunk(header=pb.UpdateHeader())),
    )
    messages = data.draw(st.lists(part, max_size=6))
    fuzzed.call(
        "SubmitUpdate", [m.SerializeToString() for m in messages], fuzzed.signed("SubmitUpdate")
    )
    assert fuzzed.state.updates_for_round(1) == []


@FUZZ
@given(body=st.binary(max_size=2000), chunks=st.integers(1, 4))
def test_random_payload_for_the_real_task(fuzzed: Fuzzed, body: bytes, chunks: int) -> None:
    """A well-framed update for the right task, whose payload is noise: always refused."""
    header = pb.UpdateChunk(
        header=pb.UpdateHeader(
            task_id=fuzzed.task.task_id,
            round=1,
            payload_size=len(body),
            payload_sha256=hashlib.sha256(body).digest(),
        )
    )
    step = max(1, -(-len(body) // chunks))
    parts = [pb.UpdateChunk(data=body[i : i + step]) for i in range(0, len(body), step)]
    messages = [m.SerializeToString() for m in (header, *parts)]
    with pytest.raises(grpc.RpcError) as info:
        fuzzed.channel.stream_unary(SERVICE + "SubmitUpdate")(
            iter(messages), metadata=fuzzed.signed("SubmitUpdate"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fuzzed.state.updates_for_round(1) == []


def test_oversized_messages(fuzzed: Fuzzed) -> None:
    """Messages above the server's 8 MiB cap are refused by gRPC before any handler runs."""
    big = b"\0" * (9 << 20)
    for metadata in (None, fuzzed.signed("Heartbeat")):
        fuzzed.call("Heartbeat", big, metadata)
    chunk = pb.UpdateChunk(data=big).SerializeToString()
    fuzzed.call("SubmitUpdate", [chunk], fuzzed.signed("SubmitUpdate"))
    assert fuzzed.codes["Heartbeat"][-2:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert fuzzed.codes["SubmitUpdate"][-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fuzzed.state.updates_for_round(1) == []


# --- afterwards ----------------------------------------------------------------------------------


def test_server_still_works_after_fuzzing(fuzzed: Fuzzed) -> None:
    state = fuzzed.state
    (task,) = [t for t in state.tasks_for_round(1) if t.client_id == CLIENT]
    assert state.updates_for_round(1) == []
    assert [r.status for r in state.list_rounds()] == ["open"]
    assert [c.client_id for c in state.list_clients()] == [CLIENT, "silent"]

    # A new client can still enroll and heartbeat.
    token = new_token()
    state.add_token(TokenRecord(hash_token(token), time.time()))
    conn = fuzzed.conn
    other = Connection(fuzzed.address, credentials=channel_credentials(fuzzed.ca), timeout_s=10)
    try:
        assert other.enroll(token, generate_key(), "edge-after", profile_message(2, {}))[0] == (
            "edge-after"
        )
        assert not other.heartbeat(profile_message(2, {})).finished
        assert conn.heartbeat(profile_message(10, {})).current_round == 1

        fetched = conn.fetch_task(5.0)
        assert isinstance(fetched, TaskMessage)
        assert (fetched.task_id, fetched.data) == (task.task_id, fuzzed.task.data)
        tensors = {n: t * 2 for n, t in adapter().items()}
        data = payload_to_bytes(Payload(tensors=tensors, metrics={"num_examples": 10}))
        assert conn.submit(fetched.task_id, 1, data) == len(data)
        # The silent client's task holds the round open; it answers with the same update.
        theirs = fuzzed.silent.fetch_task(5.0)
        assert isinstance(theirs, TaskMessage)
        assert fuzzed.silent.submit(theirs.task_id, 1, data) == len(data)
        assert fuzzed.service.wait(5.0)
        done = state.get_round(1)
        assert done is not None
        assert (done.status, done.metrics["updates"], done.metrics["missing"]) == (ROUND_DONE, 2, 0)
        (accepted,) = [u for u in state.updates_for_round(1) if u.client_id == CLIENT]
        assert (accepted.task_id, accepted.client_id) == (task.task_id, CLIENT)
        assert state.get_blob(accepted.payload_sha) == data
        result = payload_from_bytes(conn.download("global")).tensors
        for name, tensor in tensors.items():
            assert torch.equal(result[name], tensor)
    finally:
        other.close()
    # Every stored update belongs to a real task; every client is one that enrolled properly.
    task_ids = {t.task_id for r in state.list_rounds() for t in state.tasks_for_round(r.round)}
    assert all(
        u.task_id in task_ids for r in state.list_rounds() for u in state.updates_for_round(r.round)
    )
    assert [c.client_id for c in state.list_clients()] == ["edge-after", CLIENT, "silent"]
    assert all(c.num_examples >= 0 for c in state.list_clients())
    # The fuzzing reached past the first checks: each RPC fuzzed at length got varied answers.
    for method, codes in fuzzed.codes.items():
        if len(codes) >= 50:
            assert len(set(codes)) > 1, (method, set(codes))
