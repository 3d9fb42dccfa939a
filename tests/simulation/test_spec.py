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
