"""Flower's Ray engine and the in-process engine reach the same global model for the same seed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

import psutil
import ray
import torch

from fedft.privacy.mechanisms import SecureGaussian
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.flower.engine import FlowerEngine
from fedft.simulation.report import Report
from fedft.simulation.spec import SimulationSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "fedavg_lora": ("fedavg_lora", {}, {}),
    "fedkseed": ("fedkseed", {"local_steps": 10, "seeds": 512, "lr": 5e-5}, {}),
    # What the assembly point adds in every host: server-side DP (clip and noise), client-side
    # clipping, a quantized base and a simulated device population.
    "host_features": (
        "fedavg_lora",
        {},
        {
            "dp_noise": 1.0,
            "dp_clip": 0.05,
            "local_dp_clip": 0.1,
            "quant": "nf4",
            "device_mix": "fast:2,slow:1",
        },
    ),
}


def make_spec(out: Path, engine: str, case: str) -> SimulationSpec:
    strategy, options, extra = CASES[case]
    return SimulationSpec(
        **extra,
        strategy=strategy,
        strategy_options=dict(options),
        model="tiny",
        clients=3,
        rounds=3,
        seed=0,
        out=out,
        engine=engine,
        rouge_examples=0,
        eval_examples=16,
    )


def no_ray_processes_left() -> bool:
    children = psutil.Process().children(recursive=True)
    return not any("ray" in " ".join(c.cmdline()).lower() for c in children if c.is_running())


@pytest.mark.parametrize("case", sorted(CASES))
def test_flower_engine_matches_the_in_process_engine(tmp_path: Path, case: str) -> None:
    flower = FlowerEngine(make_spec(tmp_path / "flower", "flower", case))
    local = InProcessEngine(make_spec(tmp_path / "local", "inprocess", case))
    if local.dp_server is not None and flower.server.dp_server is not None:
        # Real DP noise is unpredictable by design; one fixed key makes both engines draw alike.
        local.dp_server.noise = SecureGaussian(key=bytes(32))
        flower.server.dp_server.noise = SecureGaussian(key=bytes(32))
    flower_report = flower.run()
    local_report = local.run()

    # The same global model: every tensor of the plugin's global state, to fp32 tolerance.
    mine = flower.server.server_half.global_state()
    theirs = local.server_half.global_state()
    assert set(mine.tensors) == set(theirs.tensors)
    assert mine.tensors, "the global state has tensors to compare"
    for name, tensor in theirs.tensors.items():
        assert mine.tensors[name].dtype == tensor.dtype
        torch.testing.assert_close(mine.tensors[name], tensor, rtol=1e-5, atol=1e-6)
    assert mine.config == theirs.config

    assert_same_rounds(flower_report, local_report)
    data: dict[str, Any] = json.loads((tmp_path / "flower" / "report.json").read_text())
    assert data["engine"] == "flower"
    assert data.keys() == json.loads((tmp_path / "local" / "report.json").read_text()).keys()

    # Flower's engine shut Ray down: no Ray process outlives the run.
    assert not ray.is_initialized()
    deadline = time.monotonic() + 30
    while not no_ray_processes_left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert no_ray_processes_left()


def assert_same_rounds(flower: Report, local: Report) -> None:
    assert flower.engine == "flower"
    assert flower.initial["eval_loss"] == pytest.approx(local.initial["eval_loss"], abs=1e-6)
    assert len(flower.rounds) == len(local.rounds) == 3
    for mine, theirs in zip(flower.rounds, local.rounds, strict=True):
        assert mine.round == theirs.round
        assert mine.participants == theirs.participants == 3
        # The codec is lossless, so each payload has the same size in fedft's wire format.
        assert mine.bytes_up == theirs.bytes_up
        assert mine.bytes_down == theirs.bytes_down
        assert mine.eval_loss == pytest.approx(theirs.eval_loss, abs=1e-5)
        assert mine.metrics.keys() == theirs.metrics.keys()
    assert flower.rounds[-1].eval_loss < flower.initial["eval_loss"]
