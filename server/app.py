"""Wire the coordinator together: gRPC server, round-loop thread, metrics endpoint, shutdown."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from pathlib import Path

import grpc

from fedft.core.errors import UsageError
from fedft.server.admission import AdmissionSettings
from fedft.server.artifacts import ModelArtifacts
from fedft.server.coordinator import Coordinator
from fedft.server.handlers import Admission
from fedft.server.metrics import serve_metrics
from fedft.server.servicer import CoordinatorServicer
from fedft.server.tls import is_loopback, server_credentials

logger = logging.getLogger(__name__)

# Chunks are 1 MiB; the cap leaves room for headers and refuses anything absurd early.
MAX_MESSAGE_BYTES = 8 << 20
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Clients behind NAT stay connected between long polls.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # Without this a second coordinator on the same port starts and steals connections.
    ("grpc.so_reuseport", 0),
]


def split_address(address: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) and validate the port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class CoordinatorService:
    """A running coordinator: the gRPC server plus the thread that drives rounds."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        address: str,
        cert_dir: Path | None,
        model_dir: Path | None = None,
        max_workers: int = 128,
        metrics_port: int | None = None,
        admission: AdmissionSettings | None = None,
    ):
        if metrics_port is not None and not 0 <= metrics_port <= 65535:
            raise UsageError(f"--metrics-port must be 0-65535, got {metrics_port}")
        if max_workers < 1:
            raise UsageError(f"--workers must be at least 1, got {max_workers}")
        host, _ = split_address(address)
        if cert_dir is None and not is_loopback(host):
            raise UsageError(
                f"refusing to serve without TLS on {host}: --insecure is for loopback only "
                "(bind 127.0.0.1, or run `fedft certs init` and pass --certs)"
            )
        self.coordinator = coordinator
        self.address = address
        self.cert_dir = cert_dir
        self.metrics_port = metrics_port
        artifacts = ModelArtifacts(model_dir) if model_dir is not None else None
        limits = admission or AdmissionSettings()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fedft-rpc"),
            options=GRPC_OPTIONS,
            # Calls past the cap are refused at once (RESOURCE_EXHAUSTED) instead of queueing
            # without bound; below it a burst queues for the pool's threads.
            maximum_concurrent_rpcs=limits.max_calls,
        )
        self.admission = Admission(
            CoordinatorServicer(
                coordinator, artifacts=artifacts, max_buffered_bytes=limits.max_buffered_bytes
            ),
            limits,
        )
        self.admission.register(self.server)
        self._rounds = threading.Thread(target=self._drive, name="fedft-rounds", daemon=True)
        self._error: BaseException | None = None
        self.port = 0

    def _drive(self) -> None:
        try:
            self.coordinator.run_rounds()
        except BaseException as exc:  # reported by wait(); the process must not hang silently
            logger.exception("the round loop failed")
            self._error = exc

    def start(self) -> int:
        """Bind, start serving and start the round loop; returns the bound port."""
        try:
            if self.cert_dir is not None:
                credentials = server_credentials(self.cert_dir)
                port = self.server.add_secure_port(self.address, credentials)
            else:
                port = self.server.add_insecure_port(self.address)
        except RuntimeError:  # grpc raises when the address cannot be bound
            port = 0
        if port == 0:
            raise UsageError(f"cannot bind {self.address} (in use, or not an address of this host)")
        self.port = int(port)
        self.server.start()
        if self.metrics_port is not None:
            try:
                serve_metrics(self.metrics_port)
            except (OSError, OverflowError) as exc:
                self.server.stop(0)
                raise UsageError(
                    f"cannot serve metrics on port {self.metrics_port}: {exc}"
                ) from None
        self._rounds.start()
        return self.port

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run is finished (True) or ``timeout`` passes (False)."""
        self._rounds.join(timeout)
        if self._error is not None:
            raise RuntimeError("the round loop failed") from self._error
        return not self._rounds.is_alive()

    def stop(self, grace: float = 5.0) -> None:
        """Stop the round loop and the server, letting in-flight calls finish for ``grace`` s."""
        self.coordinator.stop()
        self.server.stop(grace).wait()
        self.admission.stop()
        self._rounds.join(grace)
