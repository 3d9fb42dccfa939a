"""Authentication under attack: TLS, enrollment tokens, signatures, replays and identity probing."""

from __future__ import annotations

import time

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.tls import init_certificates

from .conftest import TIMEOUT, Target


def code(call: object) -> grpc.StatusCode:
    """Run a zero-argument call (draining a stream) and return the status it ended with."""
    try:
        result = call()  # type: ignore[operator]
        if hasattr(result, "__iter__") and not isinstance(result, pb.HeartbeatResponse):
            list(result)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_plaintext_client_gets_no_answer(target: Target) -> None:
    channel = grpc.insecure_channel(target.address)
    try:
        from fedft.proto.v1 import coordinator_pb2_grpc as pb_grpc

        stub = pb_grpc.CoordinatorStub(channel)
        assert code(lambda: stub.GetStatus(pb.GetStatusRequest(), timeout=3)) == (
            grpc.StatusCode.UNAVAILABLE
        )
    finally:
        channel.close()


def test_wrong_ca_fails_the_handshake(target: Target, tmp_path: object) -> None:
    from pathlib import Path

    other = Path(str(tmp_path)) / "other"
    init_certificates(other, ["127.0.0.1"])
    who = target.attacker(ca=(other / "ca.pem").read_bytes())
    assert code(lambda: who.stub.GetStatus(pb.GetStatusRequest(), timeout=3)) == (
        grpc.StatusCode.UNAVAILABLE
    )


def test_missing_and_bad_signatures_are_refused(target: Target) -> None:
    who = target.enrolled("edge-a")
    assert code(lambda: who.stub.GetStatus(pb.GetStatusRequest(), timeout=TIMEOUT)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    forged = who.signed("GetStatus")
    forged[3] = ("fedft-signature", "0" * 128)
    assert code(
        lambda: who.stub.GetStatus(pb.GetStatusRequest(), metadata=forged, timeout=TIMEOUT)
    ) == (grpc.StatusCode.UNAUTHENTICATED)
    # A signature for one method does not open another.
    other = who.signed("Heartbeat")
    assert code(
        lambda: who.stub.GetStatus(pb.GetStatusRequest(), metadata=other, timeout=TIMEOUT)
    ) == (grpc.StatusCode.UNAUTHENTICATED)


def test_a_replayed_call_is_refused(target: Target) -> None:
    who = target.enrolled("edge-a")
    metadata = who.signed("GetStatus")
    who.stub.GetStatus(pb.GetStatusRequest(), metadata=metadata, timeout=TIMEOUT)
    assert code(
        lambda: who.stub.GetStatus(pb.GetStatusRequest(), metadata=metadata, timeout=TIMEOUT)
    ) == (grpc.StatusCode.UNAUTHENTICATED)


def test_unknown_and_expired_tokens_are_refused(target: Target) -> None:
    who = target.attacker()
    for token in ("fedft_not-a-token", target.token(expires_at=time.time() - 1)):
        request = pb.EnrollRequest(token=token, public_key=who.public_key(), client_id="edge-x")
        assert code(lambda r=request: who.stub.Enroll(r, timeout=TIMEOUT)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    assert target.state.get_client("edge-x") is None


def test_a_client_id_with_a_trailing_newline_cannot_enroll(target: Target) -> None:
    """Defect 6: ``re.match`` with ``$`` accepted an id ending in a newline, which cannot sign."""
    who = target.attacker()
    request = pb.EnrollRequest(
        token=target.token(), public_key=who.public_key(), client_id="edge-nl\n"
    )
    assert code(lambda: who.stub.Enroll(request, timeout=TIMEOUT)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert target.state.list_clients() == []


@pytest.mark.parametrize("method", ["GetStatus", "Heartbeat"])
def test_unknown_client_and_bad_signature_look_the_same(target: Target, method: str) -> None:
    """Defect 10: the refusal must not tell a stranger which client ids are enrolled."""
    target.enrolled("edge-real")
    stranger = Ed25519PrivateKey.generate()
    from .conftest import sign

    def refusal(client_id: str) -> str:
        stub = target.attacker().stub
        request = pb.GetStatusRequest() if method == "GetStatus" else pb.HeartbeatRequest()
        with pytest.raises(grpc.RpcError) as caught:
            getattr(stub, method)(request, metadata=sign(stranger, method, client_id), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        return str(caught.value.details())

    assert refusal("edge-real") == refusal("edge-nobody")
