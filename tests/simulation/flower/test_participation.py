"""Flower's engine offers only reachable clients and runs FedAU as the in-process engine does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

import torch

from fedft.simulation.engine import InProcessEngine
from fedft.simulation.flower.engine import FlowerEngine
from fedft.simulation.spec import SimulationSpec
from fedft.strategies.participation import FedAUServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def spec(out: Path, engine: str) -> SimulationSpec:
    return SimulationSpec(
        model="tiny",
        clients=4,
        rounds=3,
        seed=0,
        out=out,
        engine=engine,
        rouge_examples=0,
        eval_examples=8,
        availability="bernoulli:0.3-0.9",
        participation="fedau",
    )


def test_flower_runs_fedau_under_availability_like_the_in_process_engine(tmp_path: Path) -> None:
    flower = FlowerEngine(spec(tmp_path / "flower", "flower"))
    local = InProcessEngine(spec(tmp_path / "local", "inprocess"))
    assert isinstance(flower.server.server_half, FedAUServer)
    flower_report = flower.run()
    local_report = local.run()
    # The same seeded schedule in both engines, and only those clients were offered a round.
    for mine, theirs in zip(flower_report.rounds, local_report.rounds, strict=True):
        assert mine.available == theirs.available
        assert mine.participants == theirs.participants == len(mine.available or [])
        assert mine.metrics["fedau.known_clients"] == theirs.metrics["fedau.known_clients"]
    assert any(len(r.available or []) < 4 for r in local_report.rounds)
    # The same FedAU estimates and the same global model.
    flower_half, local_half = flower.server.server_half, local.server_half
    assert isinstance(local_half, FedAUServer)
    assert isinstance(flower_half, FedAUServer)
    assert flower_half.weights() == local_half.weights()
    for name, tensor in local_half.global_state().tensors.items():
        torch.testing.assert_close(
            flower_half.global_state().tensors[name], tensor, rtol=1e-5, atol=1e-6
        )
    data = json.loads((tmp_path / "flower" / "report.json").read_text())
    assert data["participation"] == "fedau"
    assert data["availability"]["spec"] == "bernoulli:0.3-0.9"
