"""An attacker's toolkit: raw protobuf stubs and its own request signer against a real TLS server.

Nothing here uses fedft's client classes: the attacker knows only ``fedft.proto`` and the
signing format written in ``fedft.core.identity``'s module docstring, as an outsider would.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.serde import payload_to_bytes
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.proto.v1 import coordinator_pb2_grpc as pb_grpc
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.state.base import State
from fedft.server.state.records import TokenRecord
from fedft.server.tls import init_certificates

PREFIX = "/fedft.proto.v1.Coordinator/"
TIMEOUT = 10.0


def adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small fp32 LoRA adapter, the global model of every attacked run."""
    g = torch.Generator().manual_seed(seed)
    return {
        "m.lora_A": torch.randn(4, 16, generator=g),
        "m.lora_B": torch.randn(16, 4, generator=g),
    }


def update_bytes(tensors: dict[str, torch.Tensor], num_examples: int = 10) -> bytes:
    """Serialize an update payload as any client would put it on the wire."""
    return payload_to_bytes(Payload(tensors=tensors, metrics={"num_examples": num_examples}))


def sign(
    key: Ed25519PrivateKey,
    method: str,
    client_id: str,
    *,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> list[tuple[str, str]]:
    """Sign a call by the documented format, with any timestamp and nonce the attacker picks."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    nonce_hex = secrets.token_hex(16) if nonce is None else nonce
    text = "\n".join(("fedft-sig-v1", PREFIX + method, client_id, str(ts), nonce_hex))
    signature = key.sign(text.encode()).hex()
    return [
        ("fedft-client-id", client_id),
        ("fedft-timestamp", str(ts)),
        ("fedft-nonce", nonce_hex),
        ("fedft-signature", signature),
    ]


@dataclass
class Attacker:
    """One identity (maybe none) talking to the coordinator through raw stubs."""

    channel: grpc.Channel
    stub: pb_grpc.CoordinatorStub
    client_id: str = ""
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def signed(self, method: str, **kwargs: Any) -> list[tuple[str, str]]:
        """Metadata for one call to ``method`` under this identity."""
        return sign(self.key, method, self.client_id, **kwargs)

    def public_key(self) -> bytes:
        """The raw Ed25519 public key this attacker enrolls."""
        return self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def fetch(self) -> tuple[pb.TaskHeader, bytes]:
        """Fetch this identity's task (header and payload)."""
        chunks = list(
            self.stub.FetchTask(
                pb.FetchTaskRequest(wait_ms=5000),
                metadata=self.signed("FetchTask"),
                timeout=TIMEOUT,
            )
        )
        assert chunks[0].WhichOneof("part") == "header", chunks[0]
        return chunks[0].header, b"".join(c.data for c in chunks[1:])

    def submit(
        self, task: pb.TaskHeader, data: bytes, extra: Iterable[pb.UpdateChunk] = ()
    ) -> pb.SubmitUpdateResponse:
        """Upload ``data`` for ``task`` in one chunk, then any ``extra`` messages."""
        head = pb.UpdateHeader(
            task_id=task.task_id,
            round=task.round,
            payload_size=len(data),
            payload_sha256=hashlib.sha256(data).digest(),
        )
        messages = [pb.UpdateChunk(header=head), pb.UpdateChunk(data=data), *extra]
        return self.stub.SubmitUpdate(  # type: ignore[no-any-return]
            iter(messages), metadata=self.signed("SubmitUpdate"), timeout=TIMEOUT
        )


@dataclass
class Target:
    """A coordinator serving on loopback with TLS, and the attacker's ways in."""

    service: CoordinatorService
    coordinator: Coordinator
    ca: bytes
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def state(self) -> State:
        """The coordinator's state store."""
        return self.coordinator.state

    @property
    def address(self) -> str:
        """Where the server listens."""
        return f"127.0.0.1:{self.service.port}"

    def attacker(self, client_id: str = "", *, ca: bytes | None = None) -> Attacker:
        """A fresh channel and stub (trusting ``ca``, by default the server's own CA)."""
        creds = grpc.ssl_channel_credentials(root_certificates=ca or self.ca)
        channel = grpc.secure_channel(self.address, creds)
        self.channels.append(channel)
        return Attacker(channel, pb_grpc.CoordinatorStub(channel), client_id)

    def token(self, expires_at: float | None = None) -> str:
        """Issue a one-time enrollment token straight into the state, as `fedft token` does."""
        token = "fedft_" + secrets.token_urlsafe(24)
        digest = hashlib.sha256(token.encode()).hexdigest()
        self.state.add_token(TokenRecord(digest, time.time(), expires_at=expires_at))
        return token

    def enrolled(self, client_id: str, num_examples: int = 10) -> Attacker:
        """An attacker holding a real enrolled identity."""
        who = self.attacker(client_id)
        who.stub.Enroll(
            pb.EnrollRequest(
                token=self.token(),
                public_key=who.public_key(),
                client_id=client_id,
                profile=pb.ClientProfile(num_examples=num_examples),
            ),
            timeout=TIMEOUT,
        )
        return who

    def stop(self) -> None:
        """Close every channel and stop the server."""
        for channel in self.channels:
            channel.close()
        self.service.stop(grace=0.5)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The coordinator's CA and server certificate for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("sec-certs")
    init_certificates(folder, ["127.0.0.1"])
    return folder


def make_target(
    certs: Path,
    state: State,
    *,
    min_clients: int = 2,
    rounds: int = 1,
    service: dict[str, Any] | None = None,
    **settings: Any,
) -> Target:
    """Start a fedavg_lora coordinator over ``state`` on a free loopback port."""
    values: dict[str, Any] = {
        "round_timeout_s": 60.0,
        "liveness_s": 60.0,
        "heartbeat_interval_s": 2.0,
        "max_update_bytes": 16 << 20,
    }
    config = CoordinatorSettings(rounds=rounds, min_clients=min_clients, **{**values, **settings})
    coordinator = Coordinator(
        state,
        get_strategy("fedavg_lora"),
        {"local_steps": 1},
        seed=7,
        settings=config,
        model="attack-model",
        initial=Payload(tensors=adapter()),
    )
    running = CoordinatorService(
        coordinator,
        address="127.0.0.1:0",
        cert_dir=certs,
        **{"max_workers": 16, **(service or {})},
    )
    running.start()
    return Target(running, coordinator, (certs / "ca.pem").read_bytes())


@pytest.fixture
def target(certs: Path) -> Iterator[Target]:
    """A fresh coordinator over an in-memory state, waiting for two clients."""
    from fedft.server.state.memory import InMemoryState

    running = make_target(certs, InMemoryState())
    yield running
    running.stop()


def sqlite_url(folder: Path) -> str:
    """A SQLite database file URL in ``folder``."""
    return f"sqlite:///{os.fspath(folder / 'state.db')}"
