"""The client's side of the coordinator protocol: signed calls and chunked transfers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedft.core.chunking import DEFAULT_CHUNK_BYTES, Reassembler, iter_chunks, sha256
from fedft.core.identity import public_key_bytes, sign_request
from fedft.core.payload import ConfigValue, MetricValue
from fedft.core.serde import config_from_proto, metrics_from_proto, metrics_to_proto
from fedft.core.status import ClientStatus, RoundStatus, RunStatus
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.proto.v1 import coordinator_pb2_grpc as pb_grpc

SERVICE = "/fedft.proto.v1.Coordinator/"
# Trailers the coordinator sets: its clock on an auth refusal, a wait on a rate-limit refusal.
TIME_HEADER = "fedft-server-time-ms"
RETRY_HEADER = "fedft-retry-after-ms"
MAX_MESSAGE_BYTES = 8 << 20
# A downloaded artifact is held in memory; the base model goes to disk chunk by chunk instead.
MAX_DOWNLOAD_BYTES = 8 << 30


@dataclass(frozen=True)
class RunDescription:
    """What the coordinator says about its run."""

    run_id: str
    strategy: str
    config: dict[str, ConfigValue]
    rounds: int
    model: str


@dataclass(frozen=True)
class TaskMessage:
    """A fetched task: ids, deadline and the serialized payload."""

    task_id: str
    round: int
    deadline_unix_ms: int
    data: bytes


@dataclass(frozen=True)
class NoTaskMessage:
    """The coordinator has no task for us now."""

    retry_after_s: float
    finished: bool


def run_description(run: pb.RunInfo) -> RunDescription:
    """Decode the wire description of the run."""
    return RunDescription(
        run.run_id, run.strategy, config_from_proto(run.config), run.rounds, run.model
    )


def profile_message(num_examples: int, properties: dict[str, MetricValue]) -> pb.ClientProfile:
    """Encode a client profile."""
    return pb.ClientProfile(num_examples=num_examples, properties=metrics_to_proto(properties))


class Connection:
    """One channel to a coordinator; every call but ``enroll`` is signed with the client key.

    Calls raise ``grpc.RpcError``; retrying with backoff is the daemon's business, since only it
    knows which failures are worth retrying.
    """

    def __init__(
        self,
        address: str,
        *,
        credentials: grpc.ChannelCredentials | None,
        timeout_s: float = 60.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ):
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
        ]
        if credentials is None:
            self.channel = grpc.insecure_channel(address, options=options)
        else:
            self.channel = grpc.secure_channel(address, credentials, options=options)
        self.stub = pb_grpc.CoordinatorStub(self.channel)
        self.timeout_s = timeout_s
        self.chunk_bytes = chunk_bytes
        self.client_id = ""
        self.key: Ed25519PrivateKey | None = None
        # Seconds to add to our clock when stamping a call, learnt from the server on refusal.
        self.clock_offset_s = 0.0
        self._last_stamp = 0.0

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def use_identity(self, client_id: str, key: Ed25519PrivateKey) -> None:
        """Sign every later call as ``client_id`` with ``key``."""
        self.client_id = client_id
        self.key = key

    def _signed(self, method: str) -> list[tuple[str, str]]:
        if self.key is None:
            raise RuntimeError("no client identity: enroll first")
        # A stamp at least one ms after the last keeps our own calls apart after a resync.
        now = max(time.time() + self.clock_offset_s, self._last_stamp + 0.001)
        self._last_stamp = now
        return sign_request(self.key, SERVICE + method, self.client_id, now=now)

    def resync(self, error: grpc.RpcError) -> bool:
        """Adopt the server clock a refusal carried; True when the call is worth retrying.

        A coordinator refuses a stamp outside its window (our clock is off) or at/before its
        replay floor (it just restarted) and says its own time; we stamp from that time on.
        """
        details_of = getattr(error, "details", None)
        trailers_of = getattr(error, "trailing_metadata", None)
        if details_of is None or trailers_of is None:
            return False  # not the answer of a call
        if not str(details_of() or "").startswith(("timestamp outside", "replayed nonce")):
            return False
        trailers = dict(trailers_of() or ())
        server_ms = trailers.get(TIME_HEADER)
        if not isinstance(server_ms, str) or not server_ms.isdigit():
            return False
        # One ms more: the server's time is at or after its replay floor, our stamp after it.
        self.clock_offset_s = int(server_ms) / 1000.0 - time.time() + 0.001
        return True

    def enroll(
        self, token: str, key: Ed25519PrivateKey, client_id: str, profile: pb.ClientProfile
    ) -> tuple[str, RunDescription]:
        """Enroll with a one-time token; returns the assigned client id and the run."""
        request = pb.EnrollRequest(
            token=token, public_key=public_key_bytes(key), client_id=client_id, profile=profile
        )
        response = self.stub.Enroll(request, timeout=self.timeout_s)
        self.use_identity(response.client_id, key)
        return response.client_id, run_description(response.run)

    def heartbeat(self, profile: pb.ClientProfile | None = None) -> pb.HeartbeatResponse:
        """Report liveness (and optionally a fresh profile)."""
        request = (
            pb.HeartbeatRequest(profile=profile) if profile is not None else pb.HeartbeatRequest()
        )
        response: pb.HeartbeatResponse = self.stub.Heartbeat(
            request, timeout=self.timeout_s, metadata=self._signed("Heartbeat")
        )
        return response

    def fetch_task(self, wait_s: float) -> TaskMessage | NoTaskMessage:
        """Long-poll for a task for up to ``wait_s`` seconds."""
        request = pb.FetchTaskRequest(wait_ms=int(wait_s * 1000))
        stream = self.stub.FetchTask(
            request, timeout=self.timeout_s + wait_s, metadata=self._signed("FetchTask")
        )
        first = next(stream)
        if first.WhichOneof("part") == "no_task":
            return NoTaskMessage(first.no_task.retry_after_ms / 1000.0, first.no_task.finished)
        header = first.header
        buffer = Reassembler(
            header.payload_size, header.payload_sha256, max_bytes=MAX_DOWNLOAD_BYTES
        )
        for message in stream:
            buffer.add(message.data)
        return TaskMessage(header.task_id, header.round, header.deadline_unix_ms, buffer.finish())

    def submit(self, task_id: str, round_number: int, data: bytes) -> int:
        """Send an update; returns the byte count the coordinator stored."""

        def messages() -> Iterator[pb.UpdateChunk]:
            yield pb.UpdateChunk(
                header=pb.UpdateHeader(
                    task_id=task_id,
                    round=round_number,
                    payload_size=len(data),
                    payload_sha256=sha256(data),
                )
            )
            for chunk in iter_chunks(data, self.chunk_bytes):
                yield pb.UpdateChunk(data=chunk)

        response = self.stub.SubmitUpdate(
            messages(), timeout=self.timeout_s, metadata=self._signed("SubmitUpdate")
        )
        return int(response.received_bytes)

    def secagg_step(self, request: pb.SecAggStepRequest) -> pb.SecAggStepResponse:
        """Send one secure aggregation stage message (or poll) and get what comes next."""
        wait_s = request.wait_ms / 1000.0
        response: pb.SecAggStepResponse = self.stub.SecAggStep(
            request, timeout=self.timeout_s + wait_s, metadata=self._signed("SecAggStep")
        )
        return response

    def download(self, name: str) -> bytes:
        """Download a whole artifact into memory (the global state, the model manifest)."""
        stream = self._artifact_stream(name)
        header = next(stream).header
        buffer = Reassembler(header.size, header.sha256, max_bytes=MAX_DOWNLOAD_BYTES)
        for message in stream:
            buffer.add(message.data)
        return buffer.finish()

    def download_to(self, name: str, path: Path) -> None:
        """Stream an artifact into a file, verifying size and digest before it is renamed in."""
        import hashlib

        stream = self._artifact_stream(name)
        header = next(stream).header
        digest, size = hashlib.sha256(), 0
        tmp = path.with_name(f".{path.name}.part")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as handle:
            for message in stream:
                handle.write(message.data)
                digest.update(message.data)
                size += len(message.data)
        if size != header.size or digest.digest() != header.sha256:
            tmp.unlink(missing_ok=True)
            raise OSError(f"artifact {name} arrived damaged ({size} of {header.size} bytes)")
        tmp.replace(path)

    def _artifact_stream(self, name: str) -> Iterator[pb.ArtifactChunk]:
        stream: Iterator[pb.ArtifactChunk] = self.stub.DownloadArtifact(
            pb.DownloadArtifactRequest(name=name),
            timeout=max(self.timeout_s, 3600.0),
            metadata=self._signed("DownloadArtifact"),
        )
        return stream

    def status(self) -> RunStatus:
        """Return the run's status."""
        response: pb.GetStatusResponse = self.stub.GetStatus(
            pb.GetStatusRequest(), timeout=self.timeout_s, metadata=self._signed("GetStatus")
        )
        return RunStatus(
            run_id=response.run.run_id,
            strategy=response.run.strategy,
            model=response.run.model,
            rounds_total=response.run.rounds,
            current_round=response.current_round,
            finished=response.finished,
            rounds=[
                RoundStatus(
                    r.round,
                    r.status,
                    r.tasks,
                    r.updates,
                    r.bytes_up,
                    r.bytes_down,
                    metrics_from_proto(r.metrics),
                )
                for r in response.rounds
            ],
            clients=[
                ClientStatus(c.client_id, c.last_seen_unix_ms / 1000.0, c.num_examples, c.alive)
                for c in response.clients
            ],
        )
