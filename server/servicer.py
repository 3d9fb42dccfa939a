"""gRPC servicer: authenticates each call, moves chunked payloads, maps refusals to statuses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from fedft.core.chunking import Reassembler, iter_chunks, sha256
from fedft.core.errors import ProtocolError
from fedft.core.identity import (
    AuthError,
    NonceCache,
    claimed_client_id,
    generate_key,
    public_key_bytes,
    verify_request,
)
from fedft.core.serde import config_to_proto, metrics_from_proto, metrics_to_proto
from fedft.core.status import RunStatus
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server import metrics as prom
from fedft.server.admission import Deadline
from fedft.server.artifacts import ModelArtifacts
from fedft.server.coordinator import Coordinator, Rejected
from fedft.server.state.records import RunRecord
from fedft.server.status import run_status
from fedft.server.uploads import Uploads

logger = logging.getLogger(__name__)

SERVICE = "/fedft.proto.v1.Coordinator/"
# Long polls hold a server thread; a bounded wait keeps the pool available to other clients.
MAX_WAIT_S = 10.0
STATUS = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission": grpc.StatusCode.PERMISSION_DENIED,
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "stale": grpc.StatusCode.FAILED_PRECONDITION,
    "duplicate": grpc.StatusCode.ALREADY_EXISTS,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "in_flight": grpc.StatusCode.ABORTED,
}

R = TypeVar("R")
TIME_HEADER = "fedft-server-time-ms"
# Nobody holds its private key: it stands in for the key of an unknown client id.
_DECOY_KEY = public_key_bytes(generate_key())
# Reasons safe to tell a caller; everything about keys and ids reads "bad signature".
_PUBLIC_REASONS = ("missing header", "malformed header", "timestamp outside", "replayed nonce")


def public_reason(exc: AuthError) -> str:
    """What a refused caller is told: the header or clock problem, else only "bad signature"."""
    text = str(exc)
    return text if text.startswith(_PUBLIC_REASONS) else "bad signature"


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


class CoordinatorServicer:
    """Serves the Coordinator service of ``fedft/proto/v1/coordinator.proto``.

    :class:`fedft.server.handlers.Admission` calls it once a call is admitted and authenticated:
    every method but Enroll receives the verified client id.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        artifacts: ModelArtifacts | None = None,
        skew_s: float = 30.0,
        ahead_s: float = 5.0,
        max_buffered_bytes: int = 2 << 30,
    ):
        self.coordinator = coordinator
        self.artifacts = artifacts
        self.skew_s = skew_s
        self.ahead_s = ahead_s
        # Per-client windows; the floor is after every timestamp an earlier process of this
        # coordinator can have accepted (it never took one more than ``ahead_s`` ahead), so a
        # restart forgets nothing that could be replayed. Clients resync once, see TIME_HEADER.
        # A fresh state has no client whose calls could be replayed: no floor then.
        resumed = bool(coordinator.state.list_clients())
        floor = time.time() + ahead_s if resumed else float("-inf")
        self.nonces = NonceCache(window=skew_s, floor=floor)
        self.uploads = Uploads(max_buffered_bytes)

    # --- helpers -----------------------------------------------------------------------------
    def authenticate(self, context: grpc.ServicerContext, method: str) -> str:
        """Return the verified client id of this call, or abort with UNAUTHENTICATED."""
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            client_id = claimed_client_id(metadata)
            key = self.coordinator.public_key(client_id)
            if key is None:
                # Verified against a throwaway key, so an unknown id costs the same time and
                # gets the same answer as a bad signature: no probing for enrolled ids.
                key = _DECOY_KEY
            verify_request(
                key,
                SERVICE + method,
                metadata,
                skew=self.skew_s,
                ahead=self.ahead_s,
                nonce_cache=self.nonces,
            )
        except AuthError as exc:
            prom.REJECTED.labels(reason="auth").inc()
            # Our clock (or, just after a restart, the replay floor: the earliest stamp we
            # accept again), so an honest client whose stamp was refused resyncs and retries.
            now_ms = int(max(time.time(), self.nonces.floor) * 1000)
            context.set_trailing_metadata(((TIME_HEADER, str(now_ms)),))
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, public_reason(exc))
        return client_id

    def _guard(self, context: grpc.ServicerContext, method: str, call: Callable[[], R]) -> R:
        """Run ``call``, turning refusals into gRPC statuses and timing it for Prometheus."""
        start = time.perf_counter()
        try:
            return call()
        except Rejected as exc:
            _abort(context, STATUS[exc.code], str(exc))
        except ProtocolError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            prom.LATENCY.labels(method=method).observe(time.perf_counter() - start)

    # --- RPCs --------------------------------------------------------------------------------
    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        """Trade a token and a public key for a client id (the only unsigned call)."""

        def call() -> pb.EnrollResponse:
            client = self.coordinator.enroll(
                request.token,
                request.public_key,
                request.client_id,
                num_examples=request.profile.num_examples,
                properties=dict(metrics_from_proto(request.profile.properties)),
            )
            response = pb.EnrollResponse(
                client_id=client.client_id, run=run_info(self.coordinator.run)
            )
            self.coordinator.record_traffic(
                client.client_id, "Enroll", up=request.ByteSize(), down=response.ByteSize()
            )
            return response

        return self._guard(context, "Enroll", call)

    def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext, client_id: str
    ) -> pb.HeartbeatResponse:
        """Record liveness and profile; return the run's state."""

        def call() -> pb.HeartbeatResponse:
            profile: dict[str, Any] = {}
            if request.HasField("profile"):
                profile["num_examples"] = request.profile.num_examples
                profile["properties"] = dict(metrics_from_proto(request.profile.properties))
            self.coordinator.heartbeat(client_id, **profile)
            response = pb.HeartbeatResponse(
                run=run_info(self.coordinator.run),
                current_round=self.coordinator.current_round(),
                finished=self.coordinator.finished(),
                heartbeat_interval_ms=int(self.coordinator.settings.heartbeat_interval_s * 1000),
            )
            self.coordinator.record_traffic(
                client_id, "Heartbeat", up=request.ByteSize(), down=response.ByteSize()
            )
            return response

        return self._guard(context, "Heartbeat", call)

    def FetchTask(
        self, request: pb.FetchTaskRequest, context: grpc.ServicerContext, client_id: str
    ) -> Iterator[pb.TaskChunk]:
        """Stream this client's task (header, then chunks), or one NoTask."""
        wait_s = min(max(request.wait_ms, 0) / 1000.0, MAX_WAIT_S)
        assignment = self._guard(
            context, "FetchTask", lambda: self.coordinator.fetch_task(client_id, wait_s)
        )
        if assignment is None:
            finished = self.coordinator.finished()
            no_task = pb.TaskChunk(no_task=pb.NoTask(retry_after_ms=1000, finished=finished))
            self.coordinator.record_traffic(
                client_id, "FetchTask", up=request.ByteSize(), down=no_task.ByteSize()
            )
            yield no_task
            return
        task = assignment.task
        header = pb.TaskChunk(
            header=pb.TaskHeader(
                task_id=task.task_id,
                round=task.round,
                payload_size=len(assignment.data),
                payload_sha256=sha256(assignment.data),
                deadline_unix_ms=int(assignment.deadline * 1000),
            )
        )
        sent = header.ByteSize()
        yield header
        for chunk in iter_chunks(assignment.data, self.coordinator.settings.chunk_bytes):
            message = pb.TaskChunk(data=chunk)
            sent += message.ByteSize()
            yield message
        self.coordinator.record_traffic(
            client_id,
            "FetchTask",
            up=request.ByteSize(),
            down=sent,
            payload_down=len(assignment.data),
            round_number=task.round,
        )

    def SubmitUpdate(
        self,
        request_iterator: Iterator[pb.UpdateChunk],
        context: grpc.ServicerContext,
        client_id: str,
        deadline: Deadline | None = None,
    ) -> pb.SubmitUpdateResponse:
        """Receive an update (header, then chunks), validate it and store it durably."""

        def call() -> pb.SubmitUpdateResponse:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "header":
                raise ProtocolError("an update stream must start with an UpdateHeader")
            header = first.header
            self.coordinator.admit(client_id, header.task_id, header.round)
            # The reassembler refuses an announced size past the limit before anything is held.
            buffer = Reassembler(
                header.payload_size,
                header.payload_sha256,
                max_bytes=self.coordinator.settings.max_update_bytes,
            )
            with self.uploads.hold(header.task_id, header.payload_size):
                received = first.ByteSize()
                for message in request_iterator:
                    if message.WhichOneof("part") != "data":
                        raise ProtocolError("only data chunks may follow the UpdateHeader")
                    buffer.add(message.data)
                    received += message.ByteSize()
                if (deadline is not None and deadline.expired) or not context.is_active():
                    # Cut or cancelled: the end of the stream was not the client's own.
                    raise ProtocolError("the upload was cut before it ended")
                data = buffer.finish()
                response = pb.SubmitUpdateResponse(received_bytes=len(data))
                # The exchange's traffic is stored in the update's own transaction.
                traffic = (received, response.ByteSize())
                self.coordinator.submit(
                    client_id, header.task_id, header.round, data, traffic=traffic
                )
            return response

        return self._guard(context, "SubmitUpdate", call)

    def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext, client_id: str
    ) -> Iterator[pb.ArtifactChunk]:
        """Stream the global state or a base-model file in chunks."""
        name = request.name
        if name == "global":
            data = self.coordinator.global_payload()
            chunk_bytes = self.coordinator.settings.chunk_bytes
            size, digest, chunks = len(data), sha256(data), iter_chunks(data, chunk_bytes)
        elif name.startswith("model/") and self.artifacts is not None:
            found = self.artifacts.open(name.removeprefix("model/"))
            if found is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"no artifact {name!r}")
            size, digest, chunks = found
        else:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no artifact {name!r}")
        header = pb.ArtifactChunk(header=pb.ArtifactHeader(name=name, size=size, sha256=digest))
        sent = header.ByteSize()
        yield header
        for chunk in chunks:
            message = pb.ArtifactChunk(data=chunk)
            sent += message.ByteSize()
            yield message
        self.coordinator.record_traffic(
            client_id, "DownloadArtifact", up=request.ByteSize(), down=sent
        )

    def SecAggStep(
        self, request: pb.SecAggStepRequest, context: grpc.ServicerContext, client_id: str
    ) -> pb.SecAggStepResponse:
        """Take a secure aggregation stage message; long-poll for the client's next one."""
        wait_s = min(max(request.wait_ms, 0) / 1000.0, MAX_WAIT_S)

        def call() -> pb.SecAggStepResponse:
            step = getattr(self.coordinator, "secagg_step", None)
            if step is None:
                raise Rejected("stale", "this run does not use secure aggregation")
            response: pb.SecAggStepResponse = step(client_id, request, wait_s)
            self.coordinator.record_traffic(
                client_id,
                "SecAggStep",
                up=request.ByteSize(),
                down=response.ByteSize(),
                round_number=request.round,
            )
            return response

        return self._guard(context, "SecAggStep", call)

    def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.ServicerContext, client_id: str
    ) -> pb.GetStatusResponse:
        """Summarise the run: rounds with bytes and metrics, clients with liveness."""
        coordinator = self.coordinator
        status = run_status(
            coordinator.state, liveness_s=coordinator.settings.liveness_s, now=coordinator.clock()
        )
        if status is None:  # the coordinator creates the run before it serves
            _abort(context, grpc.StatusCode.UNAVAILABLE, "the run is not initialised yet")
        return status_message(status, coordinator.run)


def run_info(run: RunRecord) -> pb.RunInfo:
    """Describe the run on the wire."""
    return pb.RunInfo(
        run_id=run.run_id,
        strategy=run.strategy,
        config=config_to_proto(run.config),
        rounds=run.rounds,
        model=run.model,
    )


def status_message(status: RunStatus, run: RunRecord) -> pb.GetStatusResponse:
    """Encode a run status for the wire."""
    return pb.GetStatusResponse(
        run=run_info(run),
        current_round=status.current_round,
        finished=status.finished,
        rounds=[
            pb.RoundStatus(
                round=r.round,
                status=r.status,
                tasks=r.tasks,
                updates=r.updates,
                bytes_up=r.bytes_up,
                bytes_down=r.bytes_down,
                metrics=metrics_to_proto(r.metrics),
            )
            for r in status.rounds
        ],
        clients=[
            pb.ClientStatus(
                client_id=c.client_id,
                last_seen_unix_ms=int(c.last_seen * 1000),
                num_examples=c.num_examples,
                alive=c.alive,
            )
            for c in status.clients
        ],
    )
