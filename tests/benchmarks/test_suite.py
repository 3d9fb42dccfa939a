"""The benchmark suite end to end at CI's size: every scenario writes its table and plot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "suite.py"


def load_suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fedft_benchmark_suite", SUITE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def test_list_names_the_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    suite = load_suite()
    assert suite.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("seed-k", "ferret-optimizer", "hetero", "quant", "sharegpt"):
        assert name in out


def test_every_scenario_runs_at_smoke_scale(tmp_path: Path) -> None:
    suite = load_suite()
    assert suite.main(["--scale", "smoke", "--out", str(tmp_path)]) == 0
    for name, scenario in suite.SCENARIOS.items():
        table = (tmp_path / name / "table.md").read_text()
        for cell in scenario.cells(suite.SCALES["smoke"]):
            assert f"| {cell.label} |" in table
        assert (tmp_path / name / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        suite.main(["no-such-scenario"])
