"""The edge client's TLS: trust exactly the coordinator's CA, received out of band with a token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from fedft.core.errors import UsageError

if TYPE_CHECKING:
    import grpc


def channel_credentials(ca_pem_path: str | os.PathLike[str]) -> grpc.ChannelCredentials:
    """Return ``grpc.ChannelCredentials`` that trust only the CA certificate(s) in the file.

    Raises UsageError if the file is missing or holds no valid PEM certificate, which gRPC
    would otherwise report only as a failed handshake.
    """
    import grpc

    path = Path(ca_pem_path)
    if not path.is_file():
        raise UsageError(
            f"CA certificate {path} does not exist; copy the coordinator's ca.pem (written by "
            "`fedft certs init`) to this machine"
        )
    pem = path.read_bytes()
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM certificate file ({exc})") from None
    for cert in certs:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise UsageError(
                f"{path} holds a certificate that is not a CA ({cert.subject.rfc4514_string()}); "
                "use the coordinator's ca.pem, not server.pem"
            )
    return grpc.ssl_channel_credentials(root_certificates=pem)
