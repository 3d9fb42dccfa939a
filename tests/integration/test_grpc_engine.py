"""The real stack (coordinator + client processes over TLS) against the in-process engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedft.simulation.engine import InProcessEngine
from fedft.simulation.grpc_engine import GrpcEngine
from fedft.simulation.spec import SimulationSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def spec(out: Path, engine: str) -> SimulationSpec:
    return SimulationSpec(
        model="tiny", clients=3, rounds=3, seed=0, out=out, engine=engine, rouge_examples=0
    )


def test_grpc_engine_reproduces_the_in_process_run(tmp_path: Path) -> None:
    grpc_report = GrpcEngine(spec(tmp_path / "grpc", "grpc")).run()
    local_report = InProcessEngine(spec(tmp_path / "local", "inprocess")).run()

    # Same global adapter after 3 rounds, to fp32 tolerance.
    remote = load_file(tmp_path / "grpc" / "adapter" / "adapter_model.safetensors")
    local = load_file(tmp_path / "local" / "adapter" / "adapter_model.safetensors")
    assert set(remote) == set(local)
    for name, tensor in local.items():
        torch.testing.assert_close(remote[name], tensor, rtol=1e-5, atol=1e-6)

    # Same eval losses, and the same payload bytes per round in each direction.
    assert grpc_report.engine == "grpc"
    for mine, theirs in zip(grpc_report.rounds, local_report.rounds, strict=True):
        assert mine.round == theirs.round
        assert mine.bytes_up == theirs.bytes_up
        assert mine.bytes_down == theirs.bytes_down
        assert mine.participants == theirs.participants == 3
        assert mine.eval_loss == pytest.approx(theirs.eval_loss, abs=1e-5)
        assert mine.metrics["accepted"] == 3
    assert grpc_report.rounds[-1].eval_loss < grpc_report.rounds[0].eval_loss

    data = json.loads((tmp_path / "grpc" / "report.json").read_text())
    assert data["engine"] == "grpc"
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3]
    # Every client process exited cleanly once it learned the run was over.
    for cid in ("client-0", "client-1", "client-2"):
        log = (tmp_path / "grpc" / "grpc" / "logs" / f"{cid}.log").read_text()
        assert "the run is finished" in log


def test_grpc_engine_runs_a_seed_strategy_like_the_in_process_engine(tmp_path: Path) -> None:
    """The fedkseed strategy through the real coordinator: same losses and bytes, no host code."""

    def seed_spec(out: Path, engine: str) -> SimulationSpec:
        return SimulationSpec(
            model="tiny",
            clients=2,
            rounds=2,
            seed=0,
            out=out,
            engine=engine,
            rouge_examples=0,
            strategy="fedkseed",
            strategy_options={"local_steps": 10, "seeds": 512, "lr": 5e-5},
        )

    grpc_report = GrpcEngine(seed_spec(tmp_path / "grpc", "grpc")).run()
    local_report = InProcessEngine(seed_spec(tmp_path / "local", "inprocess")).run()
    for mine, theirs in zip(grpc_report.rounds, local_report.rounds, strict=True):
        assert mine.bytes_up == theirs.bytes_up
        assert mine.bytes_down == theirs.bytes_down
        assert mine.bytes_up < 2 * 1_000  # 10 fp32 scalars per client, not a model
        assert mine.eval_loss == pytest.approx(theirs.eval_loss, abs=1e-5)
        assert mine.metrics["accepted"] == 2
    assert grpc_report.rounds[-1].eval_loss < grpc_report.initial["eval_loss"]


def test_grpc_engine_hands_every_run_setting_to_its_processes(tmp_path: Path) -> None:
    """Robust aggregation, quantization and per-client layouts reach the real processes.

    The grpc engine once started `fedft serve` without --robust: the run was silently plain
    FedAvg. Median aggregation is deterministic, so both engines must land on the same model.
    """

    def robust_spec(out: Path, engine: str) -> SimulationSpec:
        return SimulationSpec(
            model="tiny",
            clients=3,
            rounds=2,
            seed=0,
            out=out,
            engine=engine,
            rouge_examples=0,
            eval_examples=16,
            robust="median",
            quant="int8",
        )

    grpc_report = GrpcEngine(robust_spec(tmp_path / "grpc", "grpc")).run()
    local_report = InProcessEngine(robust_spec(tmp_path / "local", "inprocess")).run()
    remote = load_file(tmp_path / "grpc" / "adapter" / "adapter_model.safetensors")
    local = load_file(tmp_path / "local" / "adapter" / "adapter_model.safetensors")
    for name, tensor in local.items():
        torch.testing.assert_close(remote[name], tensor, rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(grpc_report.rounds, local_report.rounds, strict=True):
        assert "robust.step_norm" in mine.metrics
        assert mine.metrics["robust.step_norm"] == pytest.approx(
            theirs.metrics["robust.step_norm"], rel=1e-5
        )
        # Each reply reports its layout: the tiny model's 4 layers at the default rank 8.
        for record in (*mine.clients.values(), *theirs.clients.values()):
            assert (record["lora_depth"], record["ranks"]) == (4, [8, 8, 8, 8])
    assert grpc_report.memory == local_report.memory  # the same int8 base in both
