"""Denial of service and stream abuse: stalled strangers, floods, bad bytes, parallel uploads."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.admission import AdmissionSettings
from fedft.server.state.memory import InMemoryState

from .conftest import PREFIX, TIMEOUT, Attacker, Target, adapter, make_target, update_bytes


def raw(who: Attacker, method: str, kind: str = "unary_unary") -> grpc.UnaryUnaryMultiCallable:
    """A call of ``method`` that sends and receives raw bytes, bypassing the stubs' encoder."""
    factory = getattr(who.channel, kind)
    return factory(PREFIX + method)  # type: ignore[no-any-return]


def upload_messages(task: pb.TaskHeader, data: bytes) -> list[bytes]:
    """The serialized header and one data chunk of an upload of ``data``."""
    head = pb.UpdateHeader(
        task_id=task.task_id,
        round=task.round,
        payload_size=len(data),
        payload_sha256=hashlib.sha256(data).digest(),
    )
    return [
        pb.UpdateChunk(header=head).SerializeToString(),
        pb.UpdateChunk(data=data).SerializeToString(),
    ]


def two_tasks(target: Target) -> tuple[Attacker, Attacker, pb.TaskHeader]:
    a, b = target.enrolled("edge-a"), target.enrolled("edge-b")
    task, _ = a.fetch()
    return a, b, task


def test_undecodable_bytes_are_invalid_argument(target: Target) -> None:
    """Defect 9: bytes that are not a message gave INTERNAL and a server traceback."""
    who = target.enrolled("edge-a")
    with pytest.raises(grpc.RpcError) as caught:
        raw(who, "Heartbeat")(b"\xff\xff\xff", metadata=who.signed("Heartbeat"), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        raw(who, "Enroll")(b"\x0a\xff", timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_malformed_message_after_a_valid_update_commits_nothing(target: Target) -> None:
    """Defect 7: the update was committed while the client was told INTERNAL."""
    a, _, task = two_tasks(target)
    messages = [*upload_messages(task, update_bytes(adapter(1))), b"\xff\xff\xff"]
    with pytest.raises(grpc.RpcError) as caught:
        raw(a, "SubmitUpdate", "stream_unary")(
            iter(messages), metadata=a.signed("SubmitUpdate"), timeout=TIMEOUT
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert target.state.updates_for_round(task.round) == []
    # The client can still deliver its update properly afterwards.
    a.submit(task, update_bytes(adapter(1)))
    assert len(target.state.updates_for_round(task.round)) == 1


def held_upload(who: Attacker, task: pb.TaskHeader, data: bytes, release: threading.Event) -> Any:
    """Start an upload that sends its header and then waits for ``release`` before the data."""
    header, chunk = upload_messages(task, data)

    def messages() -> Iterator[bytes]:
        yield header
        release.wait(TIMEOUT)
        yield chunk

    return raw(who, "SubmitUpdate", "stream_unary").future(
        messages(), metadata=who.signed("SubmitUpdate"), timeout=TIMEOUT
    )


def test_one_upload_per_task_in_flight(target: Target) -> None:
    """Defect 5: concurrent uploads for one task each buffered a full update."""
    a, _, task = two_tasks(target)
    data = update_bytes(adapter(1))
    release = threading.Event()
    first = held_upload(a, task, data, release)
    try:
        while not target.service.admission.servicer.uploads.buffered:
            threading.Event().wait(0.01)  # the first upload's header has been admitted
        with pytest.raises(grpc.RpcError) as caught:
            a.submit(task, data)
        assert caught.value.code() == grpc.StatusCode.ABORTED
    finally:
        release.set()
    first.result()
    assert len(target.state.updates_for_round(task.round)) == 1


def test_buffered_upload_bytes_are_capped_server_wide(certs: Path) -> None:
    data = update_bytes(adapter(1))
    limits = AdmissionSettings(max_buffered_bytes=len(data) + 10)
    target = make_target(certs, InMemoryState(), service={"admission": limits})
    try:
        a, b, task_a = two_tasks(target)
        task_b, _ = b.fetch()
        release = threading.Event()
        first = held_upload(a, task_a, data, release)
        try:
            while not target.service.admission.servicer.uploads.buffered:
                threading.Event().wait(0.01)
            with pytest.raises(grpc.RpcError) as caught:
                b.submit(task_b, data)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            release.set()
        first.result()
        b.submit(task_b, data)  # room again once the first upload is stored
    finally:
        target.stop()


def stalled(who: Attacker, method: str, stop: threading.Event) -> grpc.Future:
    """Open a call of ``method`` whose request never comes (the stream stays open, silent)."""

    def nothing() -> Iterator[bytes]:
        stop.wait(TIMEOUT)
        return
        yield b""  # a generator that sends nothing

    kind = "stream_unary"
    return getattr(who.channel, kind)(PREFIX + method).future(nothing(), timeout=TIMEOUT)  # type: ignore[no-any-return]


def test_stalled_strangers_cannot_freeze_the_server(certs: Path) -> None:
    """Defect 1: silent Enroll streams held every worker thread; honest calls then timed out."""
    limits = AdmissionSettings(max_unauthenticated=4, idle_s=1.0)
    target = make_target(certs, InMemoryState(), service={"admission": limits})
    stop = threading.Event()
    try:
        honest = target.enrolled("edge-h")
        stranger = target.attacker()
        # Three times the pool: before the fix each one held a worker thread for good.
        calls = [stalled(stranger, "Enroll", stop) for _ in range(48)]
        for _ in range(5):
            honest.stub.Heartbeat(
                pb.HeartbeatRequest(), metadata=honest.signed("Heartbeat"), timeout=TIMEOUT
            )
        codes = set()
        for call in calls:
            codes.add(call.exception().code())  # every stalled call ends, the server cut it
        assert codes <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes  # over the stranger cap: refused
    finally:
        stop.set()
        target.stop()


def test_a_flooding_client_is_rate_limited_with_a_retry_hint(certs: Path) -> None:
    limits = AdmissionSettings(client_rate=1.0, client_burst=3)
    target = make_target(certs, InMemoryState(), service={"admission": limits})
    try:
        flood, other = target.enrolled("edge-f"), target.enrolled("edge-o")
        refused = None
        for _ in range(10):
            try:
                flood.stub.GetStatus(
                    pb.GetStatusRequest(), metadata=flood.signed("GetStatus"), timeout=TIMEOUT
                )
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        hint = dict(refused.trailing_metadata() or ())
        assert int(hint["fedft-retry-after-ms"]) > 0
        # Another client's bucket is its own.
        other.stub.GetStatus(
            pb.GetStatusRequest(), metadata=other.signed("GetStatus"), timeout=TIMEOUT
        )
    finally:
        target.stop()


def test_an_enrolled_client_cannot_hold_the_pool_with_silent_streams(certs: Path) -> None:
    """Within its rate, one client's silent uploads could otherwise hold every worker thread."""
    limits = AdmissionSettings(max_calls_per_client=2, idle_s=1.0)
    target = make_target(certs, InMemoryState(), service={"admission": limits, "max_workers": 6})
    stop = threading.Event()
    try:
        hog, honest = target.enrolled("edge-hog"), target.enrolled("edge-h")

        def silent() -> Iterator[bytes]:
            stop.wait(TIMEOUT)
            return
            yield b""

        calls = [
            hog.channel.stream_unary(PREFIX + "SubmitUpdate").future(
                silent(), metadata=hog.signed("SubmitUpdate"), timeout=TIMEOUT
            )
            for _ in range(12)
        ]
        for _ in range(3):
            honest.stub.Heartbeat(
                pb.HeartbeatRequest(), metadata=honest.signed("Heartbeat"), timeout=TIMEOUT
            )
        codes = [call.exception().code() for call in calls]
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 10
    finally:
        stop.set()
        target.stop()
