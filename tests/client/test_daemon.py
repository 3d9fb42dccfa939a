"""The edge daemon's pieces: its state folder, retries against a lost coordinator, sitting out."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import grpc
import pytest
import torch

from fedft.client.daemon import ClientDaemon, DaemonOptions
from fedft.client.identity_store import ClientStore, Identity
from fedft.core.errors import UsageError
from fedft.core.identity import generate_key, public_key_bytes
from fedft.core.payload import Payload


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_store_round_trips_identity_and_local_state(tmp_path: Path) -> None:
    store = ClientStore(tmp_path / "state")
    assert store.load_identity("host:1") is None
    key = generate_key()
    store.save_identity(Identity("edge-1", "host:1", key))
    loaded = store.load_identity("host:1")
    assert loaded is not None
    assert loaded.client_id == "edge-1"
    assert public_key_bytes(loaded.key) == public_key_bytes(key)
    assert (tmp_path / "state" / "client.key").stat().st_mode & 0o077 == 0

    assert store.load_local_state().tensors == {}
    state = Payload(tensors={"m": torch.arange(4.0)}, config={"round": 3})
    store.save_local_state(state)
    again = store.load_local_state()
    assert torch.equal(again.tensors["m"], state.tensors["m"])
    assert again.config == {"round": 3}


def test_store_refuses_another_servers_identity_and_damaged_files(tmp_path: Path) -> None:
    store = ClientStore(tmp_path)
    store.save_identity(Identity("edge-1", "host:1", generate_key()))
    with pytest.raises(UsageError, match="for host:1, not other:2"):
        store.load_identity("other:2")
    (tmp_path / "identity.json").write_text("{not json")
    with pytest.raises(UsageError, match="damaged"):
        store.load_identity("host:1")
    store.save_identity(Identity("edge-1", "host:1", generate_key()))
    os.chmod(tmp_path / "client.key", 0o644)
    with pytest.raises(UsageError, match="chmod 600"):
        store.load_identity("host:1")


def write_data(path: Path) -> Path:
    path.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    return path


def test_enrollment_needs_a_token(tmp_path: Path) -> None:
    options = DaemonOptions(
        server=f"127.0.0.1:{free_port()}",
        data=str(write_data(tmp_path / "d.jsonl")),
        state_dir=tmp_path / "state",
        credentials=None,
    )
    with pytest.raises(UsageError, match="--token"):
        ClientDaemon(options).run()


def test_an_absent_coordinator_is_retried_with_backoff_then_reported(tmp_path: Path) -> None:
    messages: list[str] = []
    options = DaemonOptions(
        server=f"127.0.0.1:{free_port()}",  # nothing listens there
        data=str(write_data(tmp_path / "d.jsonl")),
        state_dir=tmp_path / "state",
        credentials=None,
        token="fedft_test",
        max_backoff_s=0.05,
        max_retries=3,
    )
    daemon = ClientDaemon(options, report=messages.append)
    daemon.connection.timeout_s = 2.0
    with pytest.raises(UsageError, match="enrollment refused"):
        daemon.run()
    retries = [m for m in messages if "retrying" in m]
    assert len(retries) == 3
    assert all("UNAVAILABLE" in m for m in retries)
    assert not (tmp_path / "state" / "identity.json").exists()


def test_retrying_gives_up_at_once_on_a_permanent_error(tmp_path: Path) -> None:
    options = DaemonOptions(
        server="127.0.0.1:1",
        data=str(write_data(tmp_path / "d.jsonl")),
        state_dir=tmp_path / "state",
        credentials=None,
    )
    daemon = ClientDaemon(options)
    calls = []

    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.PERMISSION_DENIED

    def call() -> None:
        calls.append(1)
        raise Refused()

    with pytest.raises(Refused):
        daemon._retrying("submit", call)
    assert calls == [1]


def test_a_device_that_requires_noise_sits_out_what_does_not_promise_it(tmp_path: Path) -> None:
    from fedft.privacy.secagg.noisy import NoisyEncoding
    from fedft.privacy.secagg.task import SecureTask

    enc = NoisyEncoding.fit_noise(4, clip=0.05, length=64, noise_multiplier=1.0, survivors=3)
    secure = SecureTask(
        session="run",
        round=1,
        participants=4,
        me=0,
        length=64,
        ring_bits=enc.ring_bits,
        frac_bits=enc.frac_bits,
        clip=0.05,
        neighbours=2,
        threshold=2,
        weight=1.0,
        l2_clip=0.05,
        variance=enc.variance,
        survivors=3,
    )

    def daemon(floor: float, away: frozenset[int] = frozenset()) -> ClientDaemon:
        options = DaemonOptions(
            server="127.0.0.1:1",
            data=str(write_data(tmp_path / "d.jsonl")),
            state_dir=tmp_path / "state",
            credentials=None,
            require_dp_noise=floor,
            simulate_absent_rounds=away,
        )
        return ClientDaemon(options)

    assert daemon(1.0)._sit_out(1, secure) is None  # promised exactly z = 1
    assert "below 1.5" in str(daemon(1.5)._sit_out(1, secure))
    assert "in the clear" in str(daemon(1.0)._sit_out(1, None))
    assert daemon(0.0)._sit_out(1, None) is None  # no floor: any task
    assert daemon(1.0, frozenset({2}))._sit_out(2, secure) == "away (simulated)"
