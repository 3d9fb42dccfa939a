"""Replays and clock games by an enrolled client: tight skew, per-client windows, restarts."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from fedft.client.connection import Connection
from fedft.client.tls import channel_credentials
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.state.factory import open_state

from .conftest import TIMEOUT, Target, make_target, sqlite_url


def status_code(who: object, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    """Call GetStatus with the given metadata; return the status."""
    try:
        who.stub.GetStatus(pb.GetStatusRequest(), metadata=metadata, timeout=TIMEOUT)  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_stamps_far_in_the_future_are_refused(target: Target) -> None:
    """Defect 2: stamps up to 300 s ahead were accepted, the lever of the lock-out flood."""
    who = target.enrolled("edge-a")
    ahead = int((time.time() + 60) * 1000)
    assert status_code(who, who.signed("GetStatus", timestamp_ms=ahead)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_a_flooding_client_does_not_lock_out_another(target: Target) -> None:
    """Defect 2: one client's signed calls evicted others' nonces from a shared window."""
    flood, honest = target.enrolled("edge-f"), target.enrolled("edge-h")
    target.service.admission.servicer.nonces.max_entries = 20  # a small window: overflow it
    stamp = int((time.time() + 4) * 1000)
    for _ in range(30):
        status_code(flood, flood.signed("GetStatus", timestamp_ms=stamp))
    assert status_code(honest, honest.signed("GetStatus")) == grpc.StatusCode.OK


def test_a_call_accepted_before_a_restart_cannot_be_replayed_after(
    certs: Path, tmp_path: Path
) -> None:
    """Defect 8: seen nonces lived only in memory, so a restart accepted one replay."""
    url = sqlite_url(tmp_path)
    first = make_target(certs, open_state(url))
    who = first.enrolled("edge-a")
    metadata = who.signed("GetStatus")
    assert status_code(who, metadata) == grpc.StatusCode.OK
    first.stop()
    first.state.close()
    second = make_target(certs, open_state(url))
    try:
        again = second.attacker("edge-a")
        assert status_code(again, metadata) == grpc.StatusCode.UNAUTHENTICATED
        # The daemon's connection resyncs on the refusal and gets through.
        conn = Connection(
            second.address, credentials=channel_credentials(certs / "ca.pem"), timeout_s=10
        )
        conn.use_identity("edge-a", who.key)
        with pytest.raises(grpc.RpcError) as caught:
            conn.heartbeat()
        assert conn.resync(caught.value)
        conn.heartbeat()
        conn.close()
    finally:
        second.stop()
