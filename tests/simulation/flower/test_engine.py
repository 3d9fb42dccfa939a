"""Ray settings of ``--engine flower``: client resources, local CPU cap, joining a cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

from fedft.simulation.flower.engine import backend_config
from fedft.simulation.spec import SimulationSpec


def spec(**changes: object) -> SimulationSpec:
    return SimulationSpec(model="tiny", out=Path("unused"), engine="flower", **changes)  # type: ignore[arg-type]


def test_local_ray_gets_only_the_cpus_the_clients_can_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    few = backend_config(spec(clients=3, cpus_per_client=0.5))
    assert few["client_resources"] == {"num_cpus": 0.5}
    assert few["init_args"]["num_cpus"] == min(2, os.cpu_count() or 1)
    many = backend_config(spec(clients=500, cpus_per_client=1.0))
    assert many["init_args"]["num_cpus"] == os.cpu_count()
    assert many["init_args"]["address"] == "local"  # never joins a cluster by accident


def test_a_cluster_address_is_joined_without_local_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    joined = backend_config(spec(clients=64, ray_address="head:6379", gpus_per_client=0.25))
    assert joined["init_args"]["address"] == "head:6379"
    assert "num_cpus" not in joined["init_args"]  # Ray refuses sizes when joining a cluster
    assert "num_gpus" not in joined["init_args"]
    assert joined["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.25}
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert backend_config(spec(clients=4))["init_args"]["address"] == "auto"


def test_resources_must_be_positive() -> None:
    from fedft.core.errors import UsageError

    with pytest.raises(UsageError, match="--cpus-per-client must be > 0"):
        spec(cpus_per_client=0)
    with pytest.raises(UsageError, match="--gpus-per-client must be >= 0"):
        spec(gpus_per_client=-1)


def test_gpus_per_client_without_a_gpu_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from fedft.core.errors import UsageError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UsageError, match="needs a CUDA GPU"):
        backend_config(spec(gpus_per_client=0.5))
