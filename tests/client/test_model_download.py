"""Downloading the base model from a real coordinator when the device has none."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedft.client.connection import Connection, profile_message
from fedft.client.model_download import fetch_model
from fedft.core.identity import generate_key, hash_token, new_token
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.runtime.models import load_model, resolve_model
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.state.factory import open_state
from fedft.server.state.records import TokenRecord


@pytest.fixture
def connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Connection]:

    state = open_state("memory")
    token = new_token()
    state.add_token(TokenRecord(hash_token(token), time.time()))
    coordinator = Coordinator(
        state,
        get_strategy("fedavg_lora"),
        {},
        seed=0,
        settings=CoordinatorSettings(rounds=1),
        model="tiny",
        initial=Payload(tensors={"a": torch.zeros(2, 2)}),
    )
    service = CoordinatorService(
        coordinator, address="127.0.0.1:0", cert_dir=None, model_dir=resolve_model("tiny")
    )
    port = service.start()
    monkeypatch.setenv("FEDFT_CACHE", str(tmp_path / "cache"))  # where the download lands
    conn = Connection(f"127.0.0.1:{port}", credentials=None, timeout_s=30, chunk_bytes=64 << 10)
    conn.enroll(token, generate_key(), "device", profile_message(1, {}))
    yield conn
    conn.close()
    service.stop(grace=0)


def test_fetch_model_downloads_every_file_once(connection: Connection, tmp_path: Path) -> None:
    source = resolve_model("tiny")
    folder = Path(fetch_model(connection))
    assert folder.is_relative_to(tmp_path / "cache")
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    assert files
    assert sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()) == files
    for relative in files:
        assert (folder / relative).read_bytes() == (source / relative).read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert Path(fetch_model(connection)) == folder
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == stamps

    original, downloaded = load_model("tiny"), load_model(str(folder))
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(downloaded.model.state_dict()[name], tensor)
