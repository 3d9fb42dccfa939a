"""Operator mistakes at `fedft serve` start-up end in a UsageError, not a traceback (defect 11)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from fedft.core.errors import UsageError
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import Coordinator
from fedft.server.state.factory import open_state

Make = Callable[..., Coordinator]


def test_a_second_server_on_a_used_port_refuses_to_start(make_coordinator: Make) -> None:
    first = CoordinatorService(make_coordinator(), address="127.0.0.1:0", cert_dir=None)
    port = first.start()
    try:
        second = CoordinatorService(make_coordinator(), address=f"127.0.0.1:{port}", cert_dir=None)
        with pytest.raises(UsageError, match="cannot bind"):
            second.start()
    finally:
        first.stop(0)


def test_a_port_held_by_another_socket(make_coordinator: Make) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        service = CoordinatorService(make_coordinator(), address=f"127.0.0.1:{port}", cert_dir=None)
        with pytest.raises(UsageError, match="cannot bind"):
            service.start()


@pytest.mark.parametrize("options", [{"max_workers": 0}, {"metrics_port": 99999}])
def test_bad_numbers(make_coordinator: Make, options: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        CoordinatorService(make_coordinator(), address="127.0.0.1:0", cert_dir=None, **options)  # type: ignore[arg-type]


def test_status_on_a_mistyped_sqlite_path_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(UsageError, match="no database"):
        open_state(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
