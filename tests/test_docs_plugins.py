"""docs/plugins.md's example strategy, taken from the page, runs in the in-process engine."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fedft.core import registry
from fedft.simulation.console import run_with_progress
from fedft.simulation.spec import SimulationSpec

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "plugins.md"
MODULE = "fedft_docs_plugin_example"


def example_source() -> str:
    """The page's one Python block: the whole plugin module."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) == 1, "docs/plugins.md should hold exactly one Python block"
    return str(blocks[0])


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example imported as a module and registered in a registry copy, both undone after."""
    path = tmp_path / f"{MODULE}.py"
    path.write_text(example_source(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up while building the config class.
    monkeypatch.setitem(sys.modules, MODULE, module)
    spec.loader.exec_module(module)
    registry.discover()  # the built-ins first, so the copy below keeps them
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    module.register()
    return module


def test_the_example_imports_only_the_facade() -> None:
    imported = set()
    for node in ast.walk(ast.parse(example_source())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedft"):
            imported.add(node.module)
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names if a.name.startswith("fedft"))
    assert imported == {"fedft.core"}


@pytest.mark.slow
def test_the_example_strategy_runs_in_the_in_process_engine(
    plugin: ModuleType, tmp_path: Path
) -> None:
    spec = SimulationSpec(
        strategy="fedavgm_lora",
        strategy_options={"momentum": 0.5, "local_steps": 1},
        model="tiny",
        clients=2,
        rounds=2,
        seed=0,
        out=tmp_path / "run",
        rouge_examples=1,
        max_new_tokens=2,
    )
    run_with_progress(spec, quiet=True)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["strategy"] == "fedavgm_lora"
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["participants"] == 2 for r in rounds)
    assert all(r["metrics"]["accepted"] == 2 for r in rounds)
    assert all(r["metrics"]["velocity_norm"] > 0 for r in rounds)


@pytest.mark.slow
def test_the_example_strategy_runs_under_secure_aggregation(
    plugin: ModuleType, tmp_path: Path
) -> None:
    values = {
        "strategy": "fedavgm_lora",
        "strategy_options": {"momentum": 0.5, "local_steps": 1},
        "model": "tiny",
        "clients": 3,
        "rounds": 1,
        "seed": 0,
        "rouge_examples": 0,
    }
    plain = run_with_progress(SimulationSpec(out=tmp_path / "plain", **values), quiet=True)
    secure = run_with_progress(
        SimulationSpec(out=tmp_path / "secure", secagg=True, **values), quiet=True
    )
    (entry,) = secure.rounds
    assert entry.metrics["secagg_survivors"] == 3
    assert entry.metrics["velocity_norm"] == pytest.approx(
        plain.rounds[0].metrics["velocity_norm"], rel=1e-6
    )


def test_the_example_does_not_leak_into_the_registry() -> None:
    """Runs after the tests above in file order: their registration was undone."""
    assert "fedavgm_lora" not in registry.available_strategies()
    assert MODULE not in sys.modules
