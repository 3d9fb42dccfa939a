"""Tests for fedft.simulation.spec: validation of the simulation settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.spec import SimulationSpec


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        ({"dp_noise": 1.0, "dp_clip": 0.1}, "--dp-noise"),
        ({"local_dp_clip": 0.1}, "--local-dp-clip"),
        ({"quant": "nf4"}, "--quant"),
        ({"device_mix": "fast:1,slow:1"}, "--device-mix"),
    ],
)
def test_flower_engine_refuses_host_features(
    tmp_path: Path, extra: dict[str, Any], flag: str
) -> None:
    SimulationSpec(clients=2, out=tmp_path, **extra)  # fine on the in-process engine
    with pytest.raises(UsageError, match=f"{flag} is not supported with --engine flower"):
        SimulationSpec(clients=2, out=tmp_path, engine="flower", **extra)
