"""The daemon against a real coordinator: it resyncs a refused stamp and waits out rate limits."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedft.client.connection import profile_message
from fedft.client.daemon import ClientDaemon, DaemonOptions
from fedft.core.identity import generate_key, hash_token, new_token
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.server.admission import AdmissionSettings
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.state.memory import InMemoryState
from fedft.server.state.records import TokenRecord


def serve(limits: AdmissionSettings) -> CoordinatorService:
    state = InMemoryState()
    coordinator = Coordinator(
        state,
        get_strategy("fedavg_lora"),
        {},
        seed=0,
        settings=CoordinatorSettings(rounds=1, min_clients=5),
        model="m",
        initial=Payload(tensors={"a.lora_A": torch.zeros(2, 2), "a.lora_B": torch.zeros(2, 2)}),
    )
    service = CoordinatorService(
        coordinator, address="127.0.0.1:0", cert_dir=None, max_workers=8, admission=limits
    )
    service.start()
    return service


@pytest.fixture
def daemon_for(tmp_path: Path) -> Iterator[object]:
    services: list[CoordinatorService] = []

    def make(limits: AdmissionSettings) -> tuple[ClientDaemon, list[str]]:
        service = serve(limits)
        services.append(service)
        token = new_token()
        service.coordinator.state.add_token(TokenRecord(hash_token(token), time.time()))
        messages: list[str] = []
        data = tmp_path / "d.jsonl"
        data.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
        options = DaemonOptions(
            server=f"127.0.0.1:{service.port}",
            data=str(data),
            state_dir=tmp_path / "state",
            credentials=None,
            max_backoff_s=0.05,
            max_retries=3,
        )
        daemon = ClientDaemon(options, report=messages.append)
        daemon.connection.enroll(token, generate_key(), "edge-d", profile_message(5, {}))
        return daemon, messages

    yield make
    for service in services:
        service.stop(0.5)


def test_a_refused_stamp_is_resynced_and_retried(daemon_for: object) -> None:
    """Defect 2's client half: `fedft client` gave up on a replay or clock refusal."""
    daemon, _ = daemon_for(AdmissionSettings())  # type: ignore[operator]
    daemon.connection.clock_offset_s = -120.0  # this device's clock runs two minutes late
    daemon._retrying("heartbeat", daemon.connection.heartbeat)
    assert abs(daemon.connection.clock_offset_s) < 10


def test_the_daemon_waits_as_long_as_the_rate_limit_asks(daemon_for: object) -> None:
    daemon, messages = daemon_for(AdmissionSettings(client_rate=1.0, client_burst=1.0))  # type: ignore[operator]
    daemon._retrying("heartbeat", daemon.connection.heartbeat)
    daemon._retrying("heartbeat", daemon.connection.heartbeat)
    waits = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", " ".join(messages))]
    assert waits, messages
    assert max(waits) >= 0.5  # the server's hint (about 1 s), not the 0.05 s backoff cap


def test_a_resync_still_happens_after_a_long_outage(daemon_for: object) -> None:
    """Retries spent on an outage (a coordinator restarting) must not use up the resync."""
    import grpc

    daemon, _ = daemon_for(AdmissionSettings())  # type: ignore[operator]
    daemon.connection.clock_offset_s = -120.0
    outage = iter(range(5))

    class Unavailable(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

    def call() -> object:
        if next(outage, None) is not None:
            raise Unavailable()
        return daemon.connection.heartbeat()

    daemon.options = dataclasses.replace(daemon.options, max_retries=None)
    daemon._retrying("heartbeat", call)
    assert abs(daemon.connection.clock_offset_s) < 10
