"""``fedft serve`` refusals and ``fedft status`` read from a coordinator's database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from fedft.cli.main import main
from fedft.core.identity import generate_key, hash_token, new_token, public_key_bytes
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.state.factory import open_state
from fedft.server.state.records import ClientRecord, TokenRecord


def test_status_from_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    state = open_state(url)
    coordinator = Coordinator(
        state,
        get_strategy("fedavg_lora"),
        {},
        seed=0,
        settings=CoordinatorSettings(rounds=2),
        model="tiny",
        initial=Payload(tensors={"a": torch.zeros(2)}),
    )
    now = time.time()
    token = new_token()
    state.add_token(TokenRecord(hash_token(token), now))
    state.enroll(
        hash_token(token),
        ClientRecord("edge-1", public_key_bytes(generate_key()), now, now, 7),
        now,
    )
    assert coordinator._start_next_round()
    state.close()

    assert main(["status", "--db", url]) == 0
    out = capsys.readouterr().out
    assert coordinator.run.run_id[:12] in out
    assert "fedavg_lora on tiny" in out
    assert "round 1/2" in out
    assert "0/1" in out  # updates/tasks of the open round
    assert "edge-1" in out


def test_status_of_an_empty_database_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_state(url).close()
    assert main(["status", "--db", url]) == 2
    assert "no run yet" in capsys.readouterr().err


def test_serve_refuses_plaintext_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["serve", "--model", "tiny", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--insecure",
         "--bind", "0.0.0.0:0", "--rounds", "1"]
    )  # fmt: skip
    assert code == 2
    assert "loopback only" in capsys.readouterr().err


def test_serve_without_certificates_says_how_to_make_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["serve", "--model", "tiny", "--db", f"sqlite:///{tmp_path / 'c.db'}",
         "--certs", str(tmp_path / "none"), "--bind", "127.0.0.1:0", "--rounds", "1"]
    )  # fmt: skip
    assert code == 2
    assert "fedft certs init" in capsys.readouterr().err
