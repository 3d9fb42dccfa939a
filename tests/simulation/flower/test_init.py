"""Without the Flower extra, fedft works and ``--engine flower`` says how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedft.simulation.flower import INSTALL_HINT, ensure_flower, flower_missing

# Loaded at interpreter start through PYTHONPATH: makes flwr and ray unimportable, as if the
# extra had never been installed.
BLOCKER = """
import importlib.abc
import sys


class _NoFlower(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flwr", "ray"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoFlower())
"""


def run_without_flower(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(blocker), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "fedft.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_blocker_really_hides_flower(tmp_path: Path) -> None:
    probe = run_without_flower(tmp_path, "strategies")  # any command; then probe the import
    assert probe.returncode == 0, probe.stderr
    blocker = tmp_path / "blocker"
    result = subprocess.run(
        [sys.executable, "-c", "import flwr"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(blocker)),
        check=False,
    )
    assert result.returncode != 0
    assert "No module named 'flwr'" in result.stderr


def test_engine_flower_without_the_extra_names_the_install_command(tmp_path: Path) -> None:
    result = run_without_flower(
        tmp_path, "simulate", "--engine", "flower", "--model", "tiny", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'fedft[flower]'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.slow
def test_in_process_engine_runs_without_the_extra(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_without_flower(
        tmp_path, "simulate", "--model", "tiny", "--clients", "2", "--rounds", "1",
        "--rouge-examples", "0", "--eval-examples", "4", "--quiet", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "report.json").is_file()


def test_ensure_flower_passes_when_installed() -> None:
    pytest.importorskip("flwr", reason="the flower extra is not installed")
    assert flower_missing() is None
    ensure_flower()
    assert "fedft[flower]" in INSTALL_HINT
