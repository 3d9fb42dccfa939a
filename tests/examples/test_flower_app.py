"""examples/flower_app is a valid Flower app whose run config is a valid fedft simulation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

from flwr.cli.build import build_fab_from_disk
from flwr.common.config import get_fused_config_from_dir, get_project_config, validate_config

from fedft.simulation.flower.run_config import spec_from_run_config

# flwr's bundle builder uses a pathspec pattern class that pathspec has deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pathspec.*")

APP = Path(__file__).resolve().parents[2] / "examples" / "flower_app"


def test_flower_accepts_the_app_and_its_components_import() -> None:
    config = get_project_config(APP)
    ok, errors, _ = validate_config(config, check_module=True, project_dir=APP)
    assert ok, errors
    assert config["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "fedft_flower_app.server_app:app",
        "clientapp": "fedft_flower_app.client_app:app",
    }


def test_the_run_config_is_a_valid_simulation_with_strategy_options() -> None:
    run_config = get_fused_config_from_dir(APP, {"num-server-rounds": 2, "opt.local_steps": 7})
    spec = spec_from_run_config(run_config)
    assert (spec.strategy, spec.model, spec.rounds, spec.clients) == ("fedavg_lora", "tiny", 2, 4)
    assert spec.strategy_options == {"local_steps": 7, "batch_size": 4}


def test_the_app_bundle_holds_the_code_and_no_weights() -> None:
    fab = build_fab_from_disk(APP)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert "fedft_flower_app/server_app.py" in names
    assert "fedft_flower_app/client_app.py" in names
    assert not [n for n in names if n.endswith((".safetensors", ".bin", ".gguf"))]
    assert len(fab) < 100_000
