"""The coordinator's CA and server certificate, verified by cryptography and by a real gRPC call."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from fedft.client.tls import channel_credentials
from fedft.core.errors import UsageError
from fedft.core.identity import AuthError, generate_key, public_key_bytes, sign_request
from fedft.core.identity import verify_request as verify_signed
from fedft.server.tls import init_certificates, is_loopback, server_credentials

METHOD = "/fedft.test.Echo/Reverse"


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA and server certificate for the module (key generation is the slow part)."""
    out = tmp_path_factory.mktemp("certs")
    init_certificates(out, ["coordinator.example.org", "10.1.2.3", "[2001:db8::7]"])
    return out


def test_files_and_modes(certs: Path) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in certs.iterdir()}
    assert modes == {"ca.key": 0o600, "server.key": 0o600, "ca.pem": 0o644, "server.pem": 0o644}
    for name in ("ca.key", "server.key"):
        key = serialization.load_pem_private_key((certs / name).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"


def test_server_cert_verifies_against_the_ca(certs: Path) -> None:
    ca = load_cert(certs / "ca.pem")
    leaf = load_cert(certs / "server.pem")
    builder = PolicyBuilder().store(Store([ca])).time(dt.datetime.now(dt.timezone.utc))
    for name in (
        x509.DNSName("coordinator.example.org"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::7")),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        chain = builder.build_server_verifier(name).verify(leaf, [])
        assert chain == [leaf, ca]
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("other.example.org")).verify(leaf, [])


def test_server_cert_extensions(certs: Path) -> None:
    ca = load_cert(certs / "ca.pem")
    leaf = load_cert(certs / "server.pem")
    assert leaf.signature_hash_algorithm is not None
    assert leaf.signature_hash_algorithm.name == "sha256"
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coordinator.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address(a) for a in ("10.1.2.3", "2001:db8::7", "127.0.0.1", "::1")
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert ca.not_valid_after_utc > leaf.not_valid_after_utc


def test_validity_days(tmp_path: Path) -> None:
    init_certificates(tmp_path, [], days=30)
    leaf = load_cert(tmp_path / "server.pem")
    lifetime = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30)
    with pytest.raises(UsageError, match="--days"):
        init_certificates(tmp_path / "x", [], days=0)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    init_certificates(tmp_path, ["a.example"])
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(UsageError, match=r"refusing to overwrite .*ca\.key"):
        init_certificates(tmp_path, ["a.example"])
    assert (tmp_path / "ca.pem").read_bytes() == before
    init_certificates(tmp_path, ["a.example"], overwrite=True)
    assert (tmp_path / "ca.pem").read_bytes() != before


@pytest.mark.parametrize("host", ["bad host", "a..b", "-x.example", "host.example:50051", "é.fr"])
def test_invalid_hosts_write_nothing(tmp_path: Path, host: str) -> None:
    with pytest.raises(UsageError, match="neither an IP address nor a DNS name"):
        init_certificates(tmp_path / "out", [host])
    assert not (tmp_path / "out").exists()


def test_server_credentials_needs_the_files(tmp_path: Path, certs: Path) -> None:
    with pytest.raises(UsageError, match="fedft certs init"):
        server_credentials(tmp_path)
    # A key that belongs to another certificate is caught before any handshake.
    other = tmp_path / "other"
    init_certificates(other, [])
    (other / "server.key").write_bytes((certs / "server.key").read_bytes())
    with pytest.raises(UsageError, match="is not the key of"):
        server_credentials(other)


def test_channel_credentials_rejects_bad_files(tmp_path: Path, certs: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        channel_credentials(tmp_path / "ca.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(UsageError, match="not a PEM certificate"):
        channel_credentials(junk)
    with pytest.raises(UsageError, match="not a CA"):
        channel_credentials(certs / "server.pem")


CLIENT_KEY = generate_key()


def reverse(request: bytes, context: Any) -> bytes:
    """Echo handler that first checks the request's signature against CLIENT_KEY."""
    metadata = dict(context.invocation_metadata())
    try:
        # The handler serves METHOD only, so that is the method the signature must cover.
        client_id = verify_signed(public_key_bytes(CLIENT_KEY), METHOD, metadata)
    except AuthError as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.reason)
    return client_id.encode() + b":" + request[::-1]


@pytest.fixture(scope="module")
def server(certs: Path) -> Iterator[int]:
    """A TLS gRPC server on 127.0.0.1 with one generic unary method; yields its port."""
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "fedft.test.Echo", {"Reverse": grpc.unary_unary_rpc_method_handler(reverse)}
    )
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_secure_port("127.0.0.1:0", server_credentials(certs))
    assert port > 0
    srv.start()
    yield port
    srv.stop(grace=None)


@pytest.mark.integration
@pytest.mark.parametrize("target", ["127.0.0.1", "localhost"])
def test_tls_call_completes(certs: Path, server: int, target: str) -> None:
    with grpc.secure_channel(f"{target}:{server}", channel_credentials(certs / "ca.pem")) as ch:
        call = ch.unary_unary(METHOD)
        metadata = sign_request(CLIENT_KEY, METHOD, "edge-1")
        assert call(b"abc", timeout=10, metadata=metadata) == b"edge-1:cba"
        with pytest.raises(grpc.RpcError) as info:
            call(b"abc", timeout=10, metadata=sign_request(CLIENT_KEY, "/other/Method", "edge-1"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.details() == "bad signature"


@pytest.mark.integration
def test_client_with_another_ca_is_refused(server: int, tmp_path: Path) -> None:
    init_certificates(tmp_path, [])
    with grpc.secure_channel(f"127.0.0.1:{server}", channel_credentials(tmp_path / "ca.pem")) as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(METHOD)(
                b"abc", timeout=10, metadata=sign_request(CLIENT_KEY, METHOD, "x")
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("128.0.0.1", False),
        ("example.org", False),
        ("localhost.example.org", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected
