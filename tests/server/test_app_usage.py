"""Operator mistakes at `fedft serve` start-up end in a UsageError, not a traceback (defect 11)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import fedft.strategies  # noqa: F401 - registers fedavg_lora
from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.state.factory import open_state
from fedft.server.state.memory import InMemoryState


def coordinator() -> Coordinator:
    import torch

    return Coordinator(
        InMemoryState(),
        get_strategy("fedavg_lora"),
        {},
        seed=0,
        settings=CoordinatorSettings(rounds=1),
        model="m",
        initial=Payload(tensors={"a.lora_A": torch.zeros(2, 2), "a.lora_B": torch.zeros(2, 2)}),
    )


def test_a_second_server_on_a_used_port_refuses_to_start() -> None:
    first = CoordinatorService(coordinator(), address="127.0.0.1:0", cert_dir=None)
    port = first.start()
    try:
        second = CoordinatorService(coordinator(), address=f"127.0.0.1:{port}", cert_dir=None)
        with pytest.raises(UsageError, match="cannot bind"):
            second.start()
    finally:
        first.stop(0)


def test_a_port_held_by_another_socket() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        service = CoordinatorService(coordinator(), address=f"127.0.0.1:{port}", cert_dir=None)
        with pytest.raises(UsageError, match="cannot bind"):
            service.start()


@pytest.mark.parametrize("options", [{"max_workers": 0}, {"metrics_port": 99999}])
def test_bad_numbers(options: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        CoordinatorService(coordinator(), address="127.0.0.1:0", cert_dir=None, **options)  # type: ignore[arg-type]


def test_status_on_a_mistyped_sqlite_path_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(UsageError, match="no database"):
        open_state(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
