"""report.json says what reproduces the run: command, versions, commit, flags and hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedft.runtime.data import Example
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.provenance import data_hash, folder_hash
from fedft.simulation.spec import SimulationSpec


@pytest.mark.slow
def test_report_carries_its_provenance(tmp_path: Path) -> None:
    spec = SimulationSpec(
        model="tiny", clients=2, rounds=1, seed=3, out=tmp_path, rouge_examples=0,
        eval_examples=8, device="cpu", strategy_options={"local_steps": 1, "batch_size": 2},
    )  # fmt: skip
    engine = InProcessEngine(spec)
    engine.run()
    block = json.loads((tmp_path / "report.json").read_text())["provenance"]
    assert block["fedft"]
    assert {"torch", "transformers", "peft"} <= set(block["libraries"])
    assert block["spec"]["seed"] == 3
    assert block["spec"]["max_length"] == spec.max_length
    assert "out" not in block["spec"]  # two runs that differ only in --out report alike
    assert block["model_sha256"] == folder_hash(engine.bundle.path)
    assert len(block["data_sha256"]) == 64
    # Run from this checkout, the commit is known (a clean clone in CI is a git checkout too).
    assert block["commit"] is None or len(block["commit"].split("+")[0]) == 40
    card = (tmp_path / "adapter" / "README.md").read_text()
    assert "fedavg_lora" in card
    assert "fedft/tiny-llama" in card


def test_hashes_change_with_the_content(tmp_path: Path) -> None:
    a = [Example("hi", "hello", "x")]
    assert data_hash(a) == data_hash([Example("hi", "hello", "x")])
    assert data_hash(a) != data_hash([Example("hi", "hello!", "x")])
    (tmp_path / "config.json").write_text("{}")
    first = folder_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    assert folder_hash(tmp_path) != first
