"""The coordinator's TLS: its own CA and server certificate, gRPC server credentials, loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedft.core.errors import UsageError
from fedft.core.identity import atomic_write

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
SERVER_KEY = "server.key"
SERVER_CERT = "server.pem"
FILES = (CA_KEY, CA_CERT, SERVER_KEY, SERVER_CERT)

# Always in the server certificate, so a local client can reach a coordinator by any of them.
ALWAYS_HOSTS = ("localhost", "127.0.0.1", "::1")
# The CA must outlive any server certificate it signs; ten years unless asked for longer.
MIN_CA_DAYS = 3650
# Tolerate a client clock that runs a little behind the machine that issued the certificate.
BACKDATE = dt.timedelta(minutes=5)

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")

SanName: TypeAlias = x509.DNSName | x509.IPAddress


def san_entry(host: str) -> SanName:
    """Turn a host name or IP literal into a SAN entry; UsageError if it is neither."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # bracketed IPv6, as written in URLs
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise UsageError(
            f"--host {host!r} is neither an IP address nor a DNS name (give names in ASCII, "
            "IDNA-encoded if needed, without a port)"
        )
    return x509.DNSName(name)


def _san_entries(hosts: list[str]) -> list[SanName]:
    entries: list[SanName] = []
    for host in [*hosts, *ALWAYS_HOSTS]:
        entry = san_entry(host)
        if entry not in entries:
            entries.append(entry)
    return entries


def _common_name(hosts: list[str]) -> str:
    # The CN is informative only (clients match SANs), and X.509 caps it at 64 characters.
    first = hosts[0].strip() if hosts else "localhost"
    return first if 0 < len(first) <= 64 else "fedft coordinator"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _build_ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedft"),
            x509.NameAttribute(NameOID.COMMON_NAME, "fedft coordinator CA"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=max(days, MIN_CA_DAYS)))
        # path_length=0: this CA signs only end-entity certificates, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _build_server(
    key: ec.EllipticCurvePrivateKey,
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: list[str],
    now: dt.datetime,
    days: int,
) -> x509.Certificate:
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(hosts))]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            # ECDHE-ECDSA handshakes only need signatures from this key.
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def init_certificates(
    out_dir: str | os.PathLike[str],
    hosts: list[str],
    *,
    days: int = 825,
    overwrite: bool = False,
) -> list[Path]:
    """Create a CA and a server certificate for ``hosts`` in ``out_dir``; return the files.

    Writes ca.key and server.key (0600), ca.pem and server.pem (0644), all ECDSA P-256 with
    SHA-256. The server certificate is valid ``days`` days and names every host plus localhost,
    127.0.0.1 and ::1. Raises UsageError for an invalid host or day count, or when any of the
    files exists and ``overwrite`` is False.
    """
    if days < 1:
        raise UsageError(f"--days must be at least 1, got {days}")
    # Validate every host before touching the disk, so a typo leaves nothing half written.
    _san_entries(hosts)
    out = Path(out_dir)
    paths = [out / name for name in FILES]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise UsageError(
            f"refusing to overwrite {names} (use --force to replace them; every client then "
            "needs the new ca.pem)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from None

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _build_ca(ca_key, now, days)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _build_server(
        server_key, ca_key=ca_key, ca_cert=ca_cert, hosts=hosts, now=now, days=days
    )

    contents = {
        CA_KEY: (_key_pem(ca_key), 0o600),
        CA_CERT: (ca_cert.public_bytes(serialization.Encoding.PEM), 0o644),
        SERVER_KEY: (_key_pem(server_key), 0o600),
        SERVER_CERT: (server_cert.public_bytes(serialization.Encoding.PEM), 0o644),
    }
    for name, (data, mode) in contents.items():
        try:
            atomic_write(out / name, data, mode=mode)
        except OSError as exc:
            raise UsageError(f"cannot write {out / name}: {exc.strerror}") from None
    return paths


def _read_pem(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise UsageError(
            f"{what} {path} does not exist; create the coordinator's certificates with "
            f"`fedft certs init --out {path.parent}`"
        )
    return path.read_bytes()


def server_credentials(cert_dir: str | os.PathLike[str]) -> grpc.ServerCredentials:
    """Return ``grpc.ServerCredentials`` from server.pem and server.key in ``cert_dir``.

    Checks that both parse and that the key belongs to the certificate, so a mix-up fails here
    with a clear message rather than inside the TLS handshake.
    """
    import grpc  # deferred: `fedft certs init` needs none of gRPC

    folder = Path(cert_dir)
    cert_pem = _read_pem(folder / SERVER_CERT, "server certificate")
    key_pem = _read_pem(folder / SERVER_KEY, "server key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise UsageError(f"{folder / SERVER_CERT} is not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{folder / SERVER_KEY} is not an unencrypted PEM private key ({exc})"
        ) from None
    if key.public_key() != chain[0].public_key():
        raise UsageError(f"{folder / SERVER_KEY} is not the key of {folder / SERVER_CERT}")
    mode = stat.S_IMODE((folder / SERVER_KEY).stat().st_mode)
    if os.name != "nt" and mode & 0o077:
        log.warning(
            "server key %s is accessible by other users (mode %04o); run `chmod 600 %s`",
            folder / SERVER_KEY,
            mode,
            folder / SERVER_KEY,
        )
    return grpc.ssl_server_credentials([(key_pem, cert_pem)])


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or IP literal, no port) is loopback; nothing is resolved.

    Only the literal name ``localhost`` counts among names: any other name could resolve to a
    public address, so plaintext to it is not safe to allow.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1
    return ip.is_loopback
