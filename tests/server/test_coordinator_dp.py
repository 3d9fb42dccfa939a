"""The coordinator under DP: ledger entries land in the database with each round's checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch

from fedft.cli.main import main
from fedft.core.identity import generate_key, hash_token, public_key_bytes
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.privacy.accounting import epsilon
from fedft.privacy.audit import audit
from fedft.privacy.config import DPConfig
from fedft.privacy.mechanisms import SecureGaussian
from fedft.server.coordinator import Coordinator
from fedft.server.privacy_source import audit_input
from fedft.server.state.base import State
from fedft.server.state.factory import open_state
from fedft.server.state.records import TokenRecord

SPEC = get_strategy("fedavg_lora")
DP = DPConfig(noise_multiplier=1.0, clip=0.5, canaries=6)
INITIAL = {"m.lora_A": torch.zeros(8, 64), "m.lora_B": torch.zeros(64, 8)}


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., Coordinator]


@pytest.fixture
def make(make_coordinator: Make) -> Make:
    """Two rounds of two clients on a clock that never moves: only DP varies between tests."""
    return partial(
        make_coordinator,
        clock=Clock(),
        seed=5,
        initial=INITIAL,
        rounds=2,
        round_timeout_s=60,
        min_clients=2,
        liveness_s=30,
    )


def run_round(
    coordinator: Coordinator,
    clients: list[str],
    number: int,
    initial: dict[str, torch.Tensor] = INITIAL,
) -> None:
    assert coordinator._start_next_round()
    for i, cid in enumerate(clients):
        assignment = coordinator.fetch_task(cid, 0)
        assert assignment is not None
        g = torch.Generator().manual_seed(10 * number + i)
        tensors = {k: t + 0.1 * torch.randn(t.shape, generator=g) for k, t in initial.items()}
        data = payload_to_bytes(Payload(tensors=tensors, metrics={"num_examples": 4}))
        coordinator.submit(cid, assignment.task.task_id, number, data)
    current = coordinator._open_round()
    assert current is not None
    assert coordinator._round_complete(current)
    coordinator._close(current)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'coordinator.db'}"


def test_ledger_is_stored_and_audited_from_the_database(
    make: Make, db: str, tmp_path: Path
) -> None:
    state = open_state(db)
    coordinator = make(state, privacy=DP)
    clients = []
    for cid in ("edge-a", "edge-b"):
        token = f"fedft_token-{cid}"
        state.add_token(TokenRecord(hash_token(token), coordinator.clock()))
        key = public_key_bytes(generate_key())
        clients.append(coordinator.enroll(token, key, cid, num_examples=4).client_id)
    for number in (1, 2):
        run_round(coordinator, clients, number)
    ledger = state.ledger()
    assert [e.round for e in ledger] == [1, 2]
    assert {(e.noise_multiplier, e.clip_norm, e.participants) for e in ledger} == {(1.0, 0.5, 8)}
    data = audit_input(state, db)
    result = audit(data, 1e-5)
    assert result["epsilon_pld"] == pytest.approx(epsilon(data.ledger, 1e-5))
    assert result["epsilon_empirical"]["canaries_seen"] == 6

    # A restart without the DP flags keeps the stored mechanism.
    restarted = make(state, privacy=None)
    assert restarted.dp_server is not None
    assert restarted.dp_server.dp == DP
    state.close()

    out = tmp_path / "audit"
    assert main(["audit", "--db", db, "--out", str(out)]) == 0
    written = json.loads((out / "audit.json").read_text())
    assert written["rounds"] == 2
    assert written["epsilon_pld"] == pytest.approx(result["epsilon_pld"])
    assert (out / "audit.png").stat().st_size > 0


def enroll_two(state: State, coordinator: Coordinator) -> list[str]:
    clients = []
    for cid in ("edge-a", "edge-b"):
        token = f"fedft_token-{cid}"
        state.add_token(TokenRecord(hash_token(token), coordinator.clock()))
        key = public_key_bytes(generate_key())
        clients.append(coordinator.enroll(token, key, cid, num_examples=4).client_id)
    return clients


_HONEST_NORMAL = SecureGaussian.normal


def half_noise(self: SecureGaussian, size: int, std: float) -> torch.Tensor:
    """A broken mechanism: half the noise asked for, which the ledger does not know."""
    return _HONEST_NORMAL(self, size, std / 2)


@pytest.mark.parametrize("broken", [True, False])
def test_audit_of_the_database_flags_a_mechanism_that_adds_half_the_noise(  # noqa: PLR0917 - fixtures
    make: Make,
    db: str,
    tmp_path: Path,
    broken: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ledger z = 2, noise actually added z = 1: 5 rounds, 1,000 canaries, d = 20,000."""
    if broken:
        monkeypatch.setattr(SecureGaussian, "normal", half_noise)
    initial = {"m.lora_A": torch.zeros(8, 1250), "m.lora_B": torch.zeros(1250, 8)}
    dp = DPConfig(noise_multiplier=2.0, clip=0.5, canaries=1000, unseen_canaries=100)
    state = open_state(db)
    coordinator = make(state, privacy=dp, rounds=5, initial=initial)
    clients = enroll_two(state, coordinator)
    for number in range(1, 6):
        run_round(coordinator, clients, number, initial)
    assert {e.noise_multiplier for e in state.ledger()} == {2.0}
    state.close()
    out = tmp_path / "audit"
    assert main(["audit", "--db", db, "--out", str(out)]) == 0  # exit code unchanged
    written = json.loads((out / "audit.json").read_text())
    printed = capsys.readouterr().out
    if broken:
        assert written["verdict"]["code"] == "above"
        assert "WARNING" in printed
    else:
        assert written["verdict"]["code"] != "above"
        assert "WARNING" not in printed


def test_a_run_without_dp_has_an_empty_ledger(
    make: Make, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = open_state(db)
    make(state, privacy=None)
    state.close()
    assert main(["audit", "--db", db]) == 2
    assert "ledger" in capsys.readouterr().err


def test_an_empty_poisson_sample_is_still_a_noised_round(make: Make, db: str) -> None:
    state = open_state(db)
    coordinator = make(state, privacy=DPConfig(noise_multiplier=1.0, clip=0.5, sampling_rate=1e-9))
    for cid in ("edge-a", "edge-b"):
        token = f"fedft_token-{cid}"
        state.add_token(TokenRecord(hash_token(token), coordinator.clock()))
        coordinator.enroll(token, public_key_bytes(generate_key()), cid, num_examples=4)
    assert coordinator._start_next_round()
    current = coordinator._open_round()
    assert current is not None
    assert state.tasks_for_round(1) == []
    assert coordinator._round_complete(current)
    coordinator._close(current)
    released = payload_from_bytes(coordinator.global_payload()).tensors["m.lora_B"]
    assert float(released.abs().max()) > 0  # noise only, but released
    (entry,) = state.ledger()
    assert (entry.round, entry.participants, entry.sampling_rate) == (1, 0, 1e-9)
    state.close()
