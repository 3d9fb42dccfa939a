"""The grpc engine under --availability: away clients sit their round out; FedAU sees the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedft.simulation.engine import InProcessEngine
from fedft.simulation.grpc_engine import GrpcEngine
from fedft.simulation.spec import SimulationSpec
from fedft.strategies.participation import FedAUServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def spec(out: Path, engine: str) -> SimulationSpec:
    # Seed 1: everyone is present in round 1 and client-0 is away in round 2, so only one round
    # waits for its deadline.
    return SimulationSpec(
        model="tiny",
        clients=3,
        rounds=2,
        seed=1,
        out=out,
        engine=engine,
        rouge_examples=0,
        eval_examples=8,
        availability="bernoulli:0.6",
        participation="fedau",
    )


def test_away_clients_sit_out_and_fedau_matches_the_in_process_engine(tmp_path: Path) -> None:
    remote = GrpcEngine(spec(tmp_path / "grpc", "grpc"))
    local = InProcessEngine(spec(tmp_path / "local", "inprocess"))
    assert [local.availability.available(r) for r in (1, 2)] == [
        ["client-0", "client-1", "client-2"],
        ["client-1", "client-2"],
    ]
    remote_report = remote.run()
    local_report = local.run()
    for mine, theirs in zip(remote_report.rounds, local_report.rounds, strict=True):
        assert mine.available == theirs.available
        assert mine.metrics["accepted"] == theirs.metrics["accepted"] == len(theirs.available or [])
    # The coordinator offered client-0 in round 2 (it has no model of availability); it sat out.
    second = remote_report.rounds[1]
    assert second.participants == 3
    assert second.metrics["failures"] == 1
    assert second.clients["client-0"]["seconds"] is None
    log = (tmp_path / "grpc" / "grpc" / "logs" / "client-0.log").read_text()
    assert "round 2: away (simulated), sitting it out" in log
    # Same estimates and the same global model as the in-process engine.
    assert isinstance(remote.server_half, FedAUServer)
    assert isinstance(local.server_half, FedAUServer)
    assert remote.server_half.weights() == local.server_half.weights()
    for name, tensor in local.server_half.global_state().tensors.items():
        torch.testing.assert_close(
            remote.server_half.global_state().tensors[name], tensor, rtol=1e-5, atol=1e-6
        )
    data = json.loads((tmp_path / "grpc" / "report.json").read_text())
    assert data["availability"]["spec"] == "bernoulli:0.6"
    assert data["participation"] == "fedau"
