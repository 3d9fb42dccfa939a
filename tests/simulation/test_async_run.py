"""``--mode async`` end to end on the tiny model: versions of K updates on one virtual clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.console import run_with_progress
from fedft.simulation.spec import SimulationSpec

pytestmark = pytest.mark.slow


def async_spec(out: Path, **overrides: Any) -> SimulationSpec:
    values: dict[str, Any] = {
        "model": "tiny",
        "clients": 6,
        "rounds": 4,
        "seed": 0,
        "out": out,
        "rouge_examples": 0,
        "eval_examples": 8,
        "device_mix": "fast:3,medium:1,slow:2",
        "mode": "async",
        "buffer": 2,
        "max_staleness": 3,
        "concurrency": 4,
        "strategy_options": {"local_steps": 2},
    }
    values.update(overrides)
    return SimulationSpec(**values)


@pytest.mark.parametrize("strategy", ["fedavg_lora", "fedkseed", "ferret"])
def test_async_run_applies_one_version_per_buffer(tmp_path: Path, strategy: str) -> None:
    spec = async_spec(tmp_path / strategy, strategy=strategy)
    report = run_with_progress(spec, quiet=True)
    data = json.loads((spec.out / "report.json").read_text())
    assert data["mode"] == "async"
    assert len(data["rounds"]) == 4
    clock = 0.0
    for version, entry in enumerate(report.rounds, start=1):
        assert entry.round == version
        assert entry.metrics["accepted"] == 2  # exactly K accepted updates per version
        assert entry.participants == 2 + int(entry.metrics["refused"])
        assert entry.seconds >= 0
        for record in entry.clients.values():
            # Every landing knows the version it was trained from and how stale it was; only
            # staleness beyond the cap is refused.
            assert record["version"] <= version - 1
            assert (record["staleness"] > 3) == ("refused" in record), record
            # It landed (started + its own seconds) before this version was applied.
            assert record["started"] + record["seconds"] <= clock + entry.seconds + 1e-3
        clock += entry.seconds
    losses = [r.eval_loss for r in report.rounds]
    assert losses[-1] < data["initial"]["eval_loss"]


def test_slow_devices_land_stale(tmp_path: Path) -> None:
    spec = async_spec(
        tmp_path / "a",
        rounds=10,
        buffer=3,
        concurrency=6,
        max_staleness=20,
        device_mix="fast:3,slow:3",
    )
    report = run_with_progress(spec, quiet=True)
    stale = [
        (record["tier"], record["staleness"])
        for entry in report.rounds
        for record in entry.clients.values()
    ]
    slow = [s for tier, s in stale if tier == "slow"]
    fast = [s for tier, s in stale if tier == "fast"]
    assert slow
    assert fast
    assert max(slow) > 0
    assert sum(slow) / len(slow) > sum(fast) / len(fast)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"engine": "flower"}, "--engine inprocess or grpc"),
        ({"engine": "grpc", "concurrency": 2}, "--concurrency is for --engine inprocess"),
        ({"dp_noise": 1.0, "dp_clip": 0.1}, "--dp"),
        ({"robust": "median"}, "--robust"),
        ({"participation": "fedau"}, "--participation"),
        ({"batch_clients": 2}, "--batch-clients"),
        ({"mode": "later"}, "--mode must be one of"),
        ({"buffer": 0}, "--buffer"),
    ],
)
def test_async_refuses_what_it_does_not_combine_with(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        async_spec(tmp_path, **extra)


def test_strategies_without_vectors_are_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot run with --mode async"):
        run_with_progress(async_spec(tmp_path, strategy="legend", strategy_options={}), quiet=True)


def test_fedkseed_with_weight_decay_is_refused(tmp_path: Path) -> None:
    options = {"local_steps": 2, "weight_decay": 0.1}
    with pytest.raises(UsageError, match="weight_decay"):
        run_with_progress(
            async_spec(tmp_path, strategy="fedkseed", strategy_options=options), quiet=True
        )


def test_ferret_with_a_server_lr_schedule_is_refused(tmp_path: Path) -> None:
    options = {"local_steps": 2, "server_lr_schedule": "cosine", "schedule_rounds": 10}
    with pytest.raises(UsageError, match="server_lr_schedule=cosine anneals"):
        run_with_progress(
            async_spec(tmp_path, strategy="ferret", strategy_options=options), quiet=True
        )
