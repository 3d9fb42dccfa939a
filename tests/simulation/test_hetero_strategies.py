"""legend and hetlora end to end on the tiny model with a mixed device population."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.console import run_with_progress
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec

pytestmark = pytest.mark.slow


def spec(out: Path, strategy: str, **overrides: object) -> SimulationSpec:
    values: dict[str, object] = {
        "strategy": strategy,
        "strategy_options": {"local_steps": 3, "batch_size": 4},
        "model": "tiny",
        "clients": 4,
        "rounds": 2,
        "seed": 0,
        "out": out,
        "rouge_examples": 0,
        "eval_examples": 16,
        "device_mix": "fast:2,slow:2",
    }
    values.update(overrides)
    return SimulationSpec(**values)  # type: ignore[arg-type]


def test_legend_plans_shallower_lora_for_slow_devices_and_exports_peft(tmp_path: Path) -> None:
    run_with_progress(spec(tmp_path / "legend", "legend"), quiet=True)
    data = json.loads((tmp_path / "legend" / "report.json").read_text())
    assert data["rounds"][-1]["eval_loss"] < data["initial"]["eval_loss"]
    for record in data["rounds"]:
        clients = record["clients"]
        assert set(clients) == {"client-0", "client-1", "client-2", "client-3"}
        by_tier = {c["tier"]: c for c in clients.values()}
        assert set(by_tier) == {"fast", "slow"}
        for c in clients.values():
            assert {"lora_depth", "ranks", "seconds", "bytes"} <= set(c)
            assert len(c["ranks"]) == c["lora_depth"]
            assert c["ranks"] == sorted(c["ranks"])  # rising toward the output
        assert by_tier["fast"]["lora_depth"] == 4
        assert by_tier["slow"]["lora_depth"] < 4
        assert by_tier["slow"]["bytes"] < by_tier["fast"]["bytes"]
        # The virtual clock: the round lasts as long as its straggler (plus server work).
        assert record["seconds"] >= max(c["seconds"] for c in clients.values())

    # The global adapter is PEFT's format and reproduces the final eval loss.
    from peft import PeftModel

    from fedft.runtime.evaluation import held_out_loss
    from fedft.runtime.models import load_model

    bundle = load_model("tiny")
    bundle.model = PeftModel.from_pretrained(bundle.model, str(tmp_path / "legend" / "adapter"))
    engine = InProcessEngine(spec(tmp_path / "unused", "legend"))
    loss = held_out_loss(bundle, engine.eval_set, max_length=engine.spec.max_length).loss
    assert loss == pytest.approx(data["final"]["eval_loss"], abs=1e-5)


def test_hetlora_gives_slow_devices_lower_ranks(tmp_path: Path) -> None:
    run_with_progress(spec(tmp_path / "het", "hetlora"), quiet=True)
    data = json.loads((tmp_path / "het" / "report.json").read_text())
    assert data["rounds"][-1]["eval_loss"] < data["initial"]["eval_loss"]
    clients = data["rounds"][0]["clients"]
    fast = [c for c in clients.values() if c["tier"] == "fast"]
    slow = [c for c in clients.values() if c["tier"] == "slow"]
    assert all(c["lora_depth"] == 4 for c in clients.values())
    assert max(c["ranks"][0] for c in slow) < min(c["ranks"][0] for c in fast)


def test_uniform_strategies_report_their_layout_too(tmp_path: Path) -> None:
    run_with_progress(
        spec(
            tmp_path / "avg",
            "fedavg_lora",
            strategy_options={"local_steps": 1, "rank": 4},
            rounds=1,
        ),
        quiet=True,
    )
    data = json.loads((tmp_path / "avg" / "report.json").read_text())
    for c in data["rounds"][0]["clients"].values():
        assert c["lora_depth"] == 4
        assert c["ranks"] == [4, 4, 4, 4]
    slow = [c["seconds"] for c in data["rounds"][0]["clients"].values() if c["tier"] == "slow"]
    assert min(slow) > 0


def test_virtual_seconds_count_each_clients_own_bytes(
    tmp_path: Path, assert_virtual_clock: Callable[[dict[str, dict[str, Any]]], None]
) -> None:
    # Before the fix a client's transfer term subtracted every earlier client's upload, so the
    # slow device (last in id order) came out with negative seconds.
    report = run_with_progress(
        spec(
            tmp_path,
            "fedavg_lora",
            strategy_options={"local_steps": 1, "batch_size": 2},
            device_mix="fast:2,medium:1,slow:1",
        ),
        quiet=True,
    )
    for record in report.rounds:
        assert_virtual_clock(record.clients)
        slow = record.clients["client-3"]
        assert slow["tier"] == "slow"
        # Same adapter, same bytes: the slow link alone makes the slow device the straggler.
        assert slow["bytes"] == record.clients["client-0"]["bytes"]
        assert slow["seconds"] == max(c["seconds"] for c in record.clients.values())


def test_device_mix_must_match_the_clients(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="describes 3 devices"):
        spec(tmp_path, "legend", device_mix="fast:1,slow:2")
    with pytest.raises(UsageError, match="unknown tier"):
        spec(tmp_path, "legend", device_mix="turbo:4")


def test_flexlora_trains_every_layer_at_the_devices_rank(tmp_path: Path) -> None:
    run_with_progress(spec(tmp_path / "flex", "flexlora"), quiet=True)
    data = json.loads((tmp_path / "flex" / "report.json").read_text())
    assert data["rounds"][-1]["eval_loss"] < data["initial"]["eval_loss"]
    clients = data["rounds"][0]["clients"]
    fast = [c for c in clients.values() if c["tier"] == "fast"]
    slow = [c for c in clients.values() if c["tier"] == "slow"]
    assert all(c["lora_depth"] == 4 for c in clients.values())
    assert max(c["ranks"][0] for c in slow) < min(c["ranks"][0] for c in fast)
