"""Tests for fedft.simulation.spec: validation of the simulation settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.spec import SimulationSpec


@pytest.mark.parametrize(
    "extra",
    [
        {"dp_noise": 1.0, "dp_clip": 0.1},
        {"local_dp_clip": 0.1},
        {"quant": "nf4"},
        {"device_mix": "fast:1,slow:1"},
        {"device": "cuda:1"},
    ],
)
def test_every_engine_takes_the_assembled_features(tmp_path: Path, extra: dict[str, Any]) -> None:
    # One assembly point builds every engine's run, so no engine refuses these any more.
    for engine in ("inprocess", "grpc", "flower"):
        assert SimulationSpec(clients=2, out=tmp_path, engine=engine, **extra).engine == engine


@pytest.mark.parametrize("device", ["gpu", "cuda:", "CUDA", "cuda:x", "tpu:0", ""])
def test_device_names_are_checked_before_anything_loads(tmp_path: Path, device: str) -> None:
    with pytest.raises(UsageError, match="--device must be auto, cpu, cuda or cuda:N"):
        SimulationSpec(out=tmp_path, device=device)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"robust": "norm"}, "--robust norm needs --robust-bound"),
        ({"robust": "mean"}, "--robust must be one of"),
        ({"robust": "trimmed", "robust_trim": 0.5}, "--robust-trim must be in"),
        ({"robust": "median", "dp_noise": 1.0, "dp_clip": 0.1}, "do not combine"),
    ],
)
def test_robust_flags_are_checked(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SimulationSpec(out=tmp_path, **extra)


@pytest.mark.slow
def test_robust_aggregation_wraps_the_server_half_in_simulation(tmp_path: Path) -> None:
    from fedft.privacy.robust import RobustServer
    from fedft.simulation.engine import InProcessEngine

    spec = SimulationSpec(
        model="tiny", clients=3, rounds=1, seed=0, out=tmp_path, rouge_examples=0,
        eval_examples=8, device="cpu", robust="median",
        strategy_options={"local_steps": 1, "batch_size": 2},
    )  # fmt: skip
    engine = InProcessEngine(spec)
    assert isinstance(engine.server_half, RobustServer)
    report = engine.run()
    assert report.rounds[0].participants == 3
