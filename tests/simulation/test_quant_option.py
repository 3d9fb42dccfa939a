"""``fedft simulate --quant``: validated early, recorded in the report, refused for ZO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.console import run_with_progress
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec


def test_spec_rejects_an_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--quant must be one of none, nf4, int8"):
        SimulationSpec(quant="fp4", out=tmp_path)


@pytest.mark.slow
def test_nf4_simulation_records_the_memory_saved(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFT_CACHE", str(tiny_cache))
    spec = SimulationSpec(
        model="tiny", clients=2, rounds=2, seed=0, out=tmp_path, rouge_examples=0, quant="nf4"
    )
    run_with_progress(spec, quiet=True)
    data = json.loads((tmp_path / "report.json").read_text())
    memory = data["memory"]
    assert memory["scheme"] == "nf4"
    assert memory["layers"] == 28  # 7 projections in each of 4 layers; lm_head stays
    assert memory["bytes_after"] < 0.3 * memory["bytes_before"]
    assert data["rounds"][-1]["eval_loss"] < data["initial"]["eval_loss"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_quant_is_refused_for_strategies_that_tune_the_base(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFT_CACHE", str(tiny_cache))
    spec = SimulationSpec(strategy="fedkseed", model="tiny", clients=2, out=tmp_path, quant="int8")
    with pytest.raises(UsageError, match="needs a LoRA strategy"):
        InProcessEngine(spec)
