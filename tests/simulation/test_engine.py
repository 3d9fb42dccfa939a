"""End-to-end simulations on the tiny model: learning, determinism, real bytes, PEFT export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.serde import payload_to_bytes
from fedft.simulation.console import run_with_progress
from fedft.simulation.engine import InProcessEngine, _Wire
from fedft.simulation.spec import SimulationSpec

pytestmark = pytest.mark.slow

ROUND_KEYS = {"round", "eval_loss", "bytes_up", "bytes_down", "participants", "seconds"}


def tiny_spec(out: Path, **overrides: object) -> SimulationSpec:
    values: dict[str, object] = {
        "model": "tiny",
        "clients": 4,
        "rounds": 3,
        "seed": 0,
        "out": out,
        "rouge_examples": 2,
        "max_new_tokens": 4,
    }
    values.update(overrides)
    return SimulationSpec(**values)  # type: ignore[arg-type]


def without_seconds(report: dict[str, object]) -> dict[str, object]:
    """The report minus wall-clock times (per round and per client), which vary run to run."""
    rounds = [
        {
            **{k: v for k, v in r.items() if k != "seconds"},
            "clients": {
                cid: {k: v for k, v in c.items() if k != "seconds"}
                for cid, c in r.get("clients", {}).items()
            },
        }
        for r in report["rounds"]  # type: ignore[attr-defined]
    ]
    return {**report, "rounds": rounds}


def test_three_rounds_reduce_eval_loss_and_write_the_report(tmp_path: Path) -> None:
    report = run_with_progress(tiny_spec(tmp_path / "a"), quiet=True)
    data = json.loads((tmp_path / "a" / "report.json").read_text())
    assert {"strategy", "model", "clients", "seed", "rounds", "final"} <= set(data)
    assert (data["strategy"], data["model"], data["clients"], data["seed"]) == (
        "fedavg_lora",
        "tiny",
        4,
        0,
    )
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3]
    assert all(set(r) >= ROUND_KEYS for r in data["rounds"])
    assert (
        data["rounds"][-1]["eval_loss"]
        < data["rounds"][0]["eval_loss"]
        < data["initial"]["eval_loss"]
    )
    assert set(data["final"]) == {"eval_loss", "rouge_l", "rouge_l_papers", "bytes_total"}
    assert 0.0 <= data["final"]["rouge_l_papers"] <= 1.0
    assert data["final"]["bytes_total"] == report.bytes_total
    assert all(r["participants"] == 4 for r in data["rounds"])
    png = (tmp_path / "a" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    # The exported global adapter is PEFT's format and reproduces the final eval.
    from peft import PeftModel

    from fedft.runtime.evaluation import held_out_loss
    from fedft.runtime.models import load_model

    bundle = load_model("tiny")
    bundle.model = PeftModel.from_pretrained(bundle.model, str(tmp_path / "a" / "adapter"))
    engine = InProcessEngine(tiny_spec(tmp_path / "unused"))
    loss = held_out_loss(bundle, engine.eval_set, max_length=engine.spec.max_length).loss
    assert loss == pytest.approx(data["final"]["eval_loss"], abs=1e-5)

    # Same command, same numbers.
    run_with_progress(tiny_spec(tmp_path / "b"), quiet=True)
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert without_seconds(again) == without_seconds(data)


def test_bytes_are_the_serialized_sizes_of_what_crossed(tmp_path: Path) -> None:
    engine = InProcessEngine(tiny_spec(tmp_path, rounds=1, clients=2, rouge_examples=0))
    report = engine.run()
    adapter = engine.server_half.global_state().tensors
    raw = sum(t.numel() * t.element_size() for t in adapter.values())
    (record,) = report.rounds
    # Two clients, each receiving and sending one adapter: raw bytes plus framing (tensor names,
    # dtype, shape, config and metrics), which stays under 100 bytes per tensor.
    for direction in (record.bytes_down, record.bytes_up):
        assert 2 * raw < direction < 2 * (raw + 100 * len(adapter))
    wire = _Wire()
    payload = Payload(tensors={"x": torch.ones(3, dtype=torch.bfloat16)}, config={"seed": 1})
    received = wire.down_hop(payload)
    assert wire.down == len(payload_to_bytes(payload))
    assert received.tensors["x"].dtype == torch.bfloat16


def test_fraction_samples_fewer_clients(tmp_path: Path) -> None:
    spec = tiny_spec(
        tmp_path, rounds=2, clients=6, strategy_options={"fraction": 0.5}, rouge_examples=0
    )
    report = InProcessEngine(spec).run()
    assert [r.participants for r in report.rounds] == [3, 3]


def test_a_partition_that_leaves_a_client_empty_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="without examples"):
        InProcessEngine(tiny_spec(tmp_path, clients=30, partition="category"))
