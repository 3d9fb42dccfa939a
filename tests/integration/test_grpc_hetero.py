"""legend through the real stack: clients profile themselves, the coordinator stores and plans."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedft.server.state.factory import open_state
from fedft.simulation.grpc_engine import GrpcEngine
from fedft.simulation.spec import SimulationSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_legend_over_grpc_plans_from_the_profiles_clients_measured(tmp_path: Path) -> None:
    spec = SimulationSpec(
        strategy="legend",
        strategy_options={"local_steps": 2, "batch_size": 4},
        model="tiny",
        clients=2,
        rounds=2,
        seed=0,
        out=tmp_path,
        engine="grpc",
        rouge_examples=0,
        eval_examples=16,
        device_mix="fast:1,slow:1",
    )
    report = GrpcEngine(spec).run()
    assert report.rounds[-1].eval_loss < report.initial["eval_loss"]

    # The coordinator stored each client's measured profile, scaled for its simulated tier.
    state = open_state(f"sqlite:///{tmp_path / 'grpc' / 'coordinator.db'}")
    try:
        profiles = {c.client_id: c.properties for c in state.list_clients()}
    finally:
        state.close()
    assert profiles["client-0"]["device.slowdown"] == 1.0
    assert profiles["client-1"]["device.slowdown"] == 4.0
    assert profiles["client-1"]["device.fwd_s"] > profiles["client-0"]["device.fwd_s"]
    assert profiles["client-0"]["device.num_layers"] == 4

    data = json.loads((tmp_path / "report.json").read_text())
    for record in data["rounds"]:
        fast, slow = record["clients"]["client-0"], record["clients"]["client-1"]
        assert (fast["tier"], slow["tier"]) == ("fast", "slow")
        assert slow["lora_depth"] < fast["lora_depth"] == 4
        assert len(slow["ranks"]) == slow["lora_depth"]
        assert slow["seconds"] > 0
        assert fast["seconds"] > 0
        assert slow["bytes"] < fast["bytes"]

    from peft import PeftModel

    from fedft.runtime.models import load_model

    bundle = load_model("tiny")
    PeftModel.from_pretrained(bundle.model, str(tmp_path / "adapter"))


def test_engines_agree_on_the_virtual_clock(
    tmp_path: Path, assert_virtual_clock: Callable[[dict[str, dict[str, Any]]], None]
) -> None:
    """Given a client's CPU time, both engines give it the same seconds: same bytes, same rule."""
    from fedft.simulation.engine import InProcessEngine

    def run(engine: str) -> list[dict[str, dict[str, Any]]]:
        spec = SimulationSpec(
            strategy="fedavg_lora",
            strategy_options={"local_steps": 1, "batch_size": 2},
            model="tiny",
            clients=2,
            rounds=1,
            seed=0,
            out=tmp_path / engine,
            engine=engine,
            rouge_examples=0,
            eval_examples=8,
            device_mix="medium:1,slow:1",
            device="cpu",
        )
        report = (GrpcEngine(spec) if engine == "grpc" else InProcessEngine(spec)).run()
        return [r.clients for r in report.rounds]

    grpc_rounds, local_rounds = run("grpc"), run("inprocess")
    for grpc_clients, local_clients in zip(grpc_rounds, local_rounds, strict=True):
        # Each daemon's profile says where it trained; here, the CPU like the in-process run.
        assert {c["device"] for c in grpc_clients.values()} == {"cpu"}
        assert {c["device"] for c in local_clients.values()} == {"cpu"}
        assert_virtual_clock(grpc_clients)
        assert_virtual_clock(local_clients)
        for cid, local in local_clients.items():
            assert grpc_clients[cid]["bytes"] == local["bytes"]
            assert grpc_clients[cid]["tier"] == local["tier"]
