"""gRPC method handlers: admission and authentication from metadata before any body is read.

Every method is registered as request-streaming, so gRPC calls our code as soon as the
headers arrive instead of parking a worker thread until the body does. The handler then, in
order: starts a server-side deadline, authenticates from metadata (or, for Enroll, takes one of
the few stranger slots), charges the client's token bucket, and only then reads the request,
parsing it leniently so undecodable bytes give INVALID_ARGUMENT, not INTERNAL (defect 9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message

from fedft.core.errors import ProtocolError
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.admission import (
    AdmissionSettings,
    Deadline,
    PerClientSlots,
    RateLimiter,
    Slots,
    Watchdog,
)
from fedft.server.servicer import MAX_WAIT_S, CoordinatorServicer

SERVICE_NAME = "fedft.proto.v1.Coordinator"
RETRY_HEADER = "fedft-retry-after-ms"


class Malformed:
    """Stands for a request message that did not parse; the handler answers INVALID_ARGUMENT."""

    def __init__(self, error: str) -> None:
        self.error = error


def lenient(cls: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """A deserializer that returns :class:`Malformed` instead of raising inside gRPC."""

    def parse(data: bytes) -> Message | Malformed:
        try:
            return cls.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as exc:
            return Malformed(f"undecodable {cls.__name__}: {exc}")

    return parse


def _wait_s(request: Any) -> float:
    """How long a long poll may stay quiet: what it asked for, within the server's bound."""
    return min(max(getattr(request, "wait_ms", 0), 0) / 1000.0, MAX_WAIT_S)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


class Admission:
    """Wraps a :class:`CoordinatorServicer` in admission control and registers it on a server."""

    def __init__(self, servicer: CoordinatorServicer, settings: AdmissionSettings) -> None:
        self.servicer = servicer
        self.settings = settings
        self.watchdog = Watchdog()
        self.strangers = Slots(settings.max_unauthenticated)
        self.limiter = RateLimiter(settings.client_rate, settings.client_burst)
        self.in_flight = PerClientSlots(settings.max_calls_per_client)

    # --- the steps every call goes through ------------------------------------------------------
    def _messages(
        self, requests: Iterator[Any], context: grpc.ServicerContext, deadline: Deadline
    ) -> Iterator[Any]:
        """Parsed request messages; each one restarts the idle clock."""
        try:
            for message in requests:
                self.watchdog.touch(deadline)
                if isinstance(message, Malformed):
                    raise ProtocolError(message.error)
                yield message
        except grpc.RpcError:
            return  # the call was cancelled (by the peer or the watchdog): no more messages
        if deadline.expired:
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "the stream went silent")

    def _first(self, messages: Iterator[Any], context: grpc.ServicerContext) -> Any:
        try:
            message = next(messages, None)
        except ProtocolError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if message is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request")
        return message

    def _admit(self, method: str, context: grpc.ServicerContext) -> str:
        """Authenticate from metadata and charge the bucket; return the client id ("" for Enroll).

        Enroll is the one call a stranger may make, and it must wait for its body: it takes a
        stranger slot (released once the body arrived). A signed call is checked from its
        headers alone, in CPU time, so a stranger's forged call is refused without waiting.
        """
        if method == "Enroll":
            if not self.strangers.take():
                _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many enrollments; retry")
            return ""
        client_id = self.servicer.authenticate(context, method)
        wait = self.limiter.take(client_id)
        if wait > 0:
            context.set_trailing_metadata(((RETRY_HEADER, str(int(wait * 1000) + 1)),))
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit: retry later")
        if not self.in_flight.take(client_id):
            context.set_trailing_metadata(((RETRY_HEADER, "100"),))
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls in flight")
        return client_id

    def _unary(self, method: str) -> Callable[[Iterator[Any], grpc.ServicerContext], Any]:
        def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            deadline = self.watchdog.watch(context, self.settings.idle_s, self.settings.max_call_s)
            client_id = ""
            try:
                client_id = self._admit(method, context)
                messages = self._messages(requests, context, deadline)
                if method == "SubmitUpdate":
                    return self.servicer.SubmitUpdate(messages, context, client_id, deadline)
                try:
                    request = self._first(messages, context)
                finally:
                    if method == "Enroll":
                        self.strangers.give()  # a stranger holds a slot until its body arrived
                if method == "Enroll":
                    return self.servicer.Enroll(request, context)
                # A long poll may be quiet for its whole wait: the idle clock allows for it.
                deadline.idle_s += _wait_s(request)
                self.watchdog.touch(deadline)
                return getattr(self.servicer, method)(request, context, client_id)
            finally:
                deadline.done = True
                if client_id:
                    self.in_flight.give(client_id)

        return handle

    def _streaming(self, method: str) -> Callable[[Iterator[Any], grpc.ServicerContext], Any]:
        def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            deadline = self.watchdog.watch(context, self.settings.idle_s, self.settings.max_call_s)
            client_id = ""
            try:
                client_id = self._admit(method, context)
                request = self._first(self._messages(requests, context, deadline), context)
                # A long poll may be quiet for its whole wait: the idle clock allows for it.
                deadline.idle_s += _wait_s(request)
                self.watchdog.touch(deadline)
                for message in getattr(self.servicer, method)(request, context, client_id):
                    self.watchdog.touch(deadline)  # the peer is reading: the call is alive
                    yield message
            finally:
                deadline.done = True
                if client_id:
                    self.in_flight.give(client_id)

        return handle

    def register(self, server: grpc.Server) -> None:
        """Add the Coordinator service's handlers to ``server``."""
        unary: dict[str, tuple[type[Message], type[Message]]] = {
            "Enroll": (pb.EnrollRequest, pb.EnrollResponse),
            "Heartbeat": (pb.HeartbeatRequest, pb.HeartbeatResponse),
            "SubmitUpdate": (pb.UpdateChunk, pb.SubmitUpdateResponse),
            "GetStatus": (pb.GetStatusRequest, pb.GetStatusResponse),
            "SecAggStep": (pb.SecAggStepRequest, pb.SecAggStepResponse),
        }
        streaming: dict[str, tuple[type[Message], type[Message]]] = {
            "FetchTask": (pb.FetchTaskRequest, pb.TaskChunk),
            "DownloadArtifact": (pb.DownloadArtifactRequest, pb.ArtifactChunk),
        }
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for name, (request, _response) in unary.items():
            handlers[name] = grpc.stream_unary_rpc_method_handler(
                self._unary(name),
                request_deserializer=lenient(request),
                response_serializer=_serialize,
            )
        for name, (request, _response) in streaming.items():
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                self._streaming(name),
                request_deserializer=lenient(request),
                response_serializer=_serialize,
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )

    def stop(self) -> None:
        """Stop the watchdog."""
        self.watchdog.stop()
