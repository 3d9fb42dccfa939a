"""The host rule, the same in every engine: a refused update is counted, never aggregated.

A real third-party plugin, installed the way users install one (a package with a
``fedft.strategies`` entry point on the path of every process), refuses client-1's update in
``check_update``. The in-process, gRPC and Flower engines must each leave it out of the
aggregate, count it under ``rejected``, and so reach the same global model.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedft.core import registry
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.report import Report
from fedft.simulation.spec import SimulationSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLUGIN = "fedft_refusing_plugin"
PLUGIN_SOURCE = '''
"""A test plugin: fedavg_lora whose server half refuses client-1's update."""

from fedft.core import register_strategy
from fedft.strategies.fedavg_lora import FedAvgLoRAClient, FedAvgLoRAConfig, FedAvgLoRAServer


class RefusingServer(FedAvgLoRAServer):
    """Refuses every update of client-1, whatever it holds."""

    def check_update(self, server_round, result):
        if result.client_id == "client-1":
            return "client-1 is refused by the test plugin"
        return super().check_update(server_round, result)


def register():
    register_strategy(
        name="refusing_lora",
        config_cls=FedAvgLoRAConfig,
        server_cls=RefusingServer,
        client_cls=FedAvgLoRAClient,
    )
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install the plugin for this process and every child (coordinator, daemons, Ray)."""
    site = tmp_path / "site"
    (site / PLUGIN).mkdir(parents=True)
    (site / PLUGIN / "__init__.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    dist = site / f"{PLUGIN}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[fedft.strategies]\nrefusing_lora = {PLUGIN}:register\n"
    )
    inherited = os.environ.get("PYTHONPATH")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(site), *([inherited] if inherited else [])])
    )
    monkeypatch.syspath_prepend(str(site))
    registry.discover()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    __import__(PLUGIN).register()
    yield "refusing_lora"
    sys.modules.pop(PLUGIN, None)


def spec(out: Path, engine: str) -> SimulationSpec:
    return SimulationSpec(
        strategy="refusing_lora",
        strategy_options={"local_steps": 2, "batch_size": 2},
        model="tiny",
        clients=3,
        rounds=2,
        seed=0,
        out=out,
        engine=engine,
        rouge_examples=0,
        eval_examples=8,
        partition="iid",
        device="cpu",
    )


def assert_refused_once_per_round(report: Report) -> None:
    for record in report.rounds:
        assert record.participants == 3
        assert record.metrics["rejected"] == 1


def test_every_engine_refuses_counts_and_leaves_out_the_same_update(
    plugin: str, tmp_path: Path
) -> None:
    pytest.importorskip("flwr", reason="the flower extra is not installed")
    from fedft.simulation.flower.engine import FlowerEngine
    from fedft.simulation.grpc_engine import GrpcEngine

    local = InProcessEngine(spec(tmp_path / "local", "inprocess")).run()
    assert_refused_once_per_round(local)
    flower = FlowerEngine(spec(tmp_path / "flower", "flower")).run()
    assert_refused_once_per_round(flower)
    grpc = GrpcEngine(spec(tmp_path / "grpc", "grpc")).run()
    assert_refused_once_per_round(grpc)
    # Left out alike, so the same global model: the losses after each round agree.
    for mine, flowers, grpcs in zip(local.rounds, flower.rounds, grpc.rounds, strict=True):
        assert flowers.eval_loss == pytest.approx(mine.eval_loss, abs=1e-5)
        assert grpcs.eval_loss == pytest.approx(mine.eval_loss, abs=1e-5)
