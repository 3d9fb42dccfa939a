"""A simulation spec survives the trip through a Flower run config; bad keys are one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

from fedft.core.errors import UsageError
from fedft.simulation.flower.run_config import spec_from_run_config, spec_to_run_config
from fedft.simulation.spec import SimulationSpec


def test_spec_round_trips_through_the_run_config() -> None:
    spec = SimulationSpec(
        strategy="fedavg_lora",
        strategy_options={"local_steps": 3, "target_modules": ["q_proj", "v_proj"], "lr": 5e-4},
        model="tiny",
        clients=7,
        rounds=4,
        partition="dirichlet:0.5",
        seed=11,
        out=Path("/tmp/somewhere"),
        max_length=64,
        engine="flower",
    )
    config = spec_to_run_config(spec)
    assert config["num-server-rounds"] == 4
    assert config["opt.target_modules"] == "q_proj,v_proj"
    assert all(isinstance(v, (bool, int, float, str)) for v in config.values())
    back = spec_from_run_config(config)
    assert dataclasses.replace(back, strategy_options={}) == dataclasses.replace(
        spec, strategy_options={}
    )
    assert back.strategy_options == {
        "local_steps": 3,
        "target_modules": ["q_proj", "v_proj"],
        "lr": 5e-4,
    }


def test_clients_come_from_the_federation_when_given() -> None:
    config = spec_to_run_config(SimulationSpec(model="tiny", clients=4))
    assert spec_from_run_config(config, clients=9).clients == 9


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"strategy": "fedavg_lora", "colour": "red"}, "unknown run-config key 'colour'"),
        ({"strategy": "fedavg_lora", "engine": "grpc"}, "unknown run-config key 'engine'"),
        ({"strategy": "fedavg_lora", "opt.nope": 1}, "has no option 'nope'"),
        ({"strategy": "fedavg_lora", "opt.local_steps": "many"}, "cannot read 'many'"),
        ({"strategy": "fedavg_lora", "clients": 0}, "--clients must be >= 1"),
    ],
)
def test_bad_run_configs_are_usage_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        spec_from_run_config(config)


def test_a_paper_preset_round_trips_through_the_run_config() -> None:
    from fedft.core.config import parse_overrides
    from fedft.strategies.ferret import FerretConfig

    options = parse_overrides(FerretConfig, ["preset=paper"])
    assert options["max_grad_norm"] is None  # "unclipped" as the preset says it
    spec = SimulationSpec(strategy="ferret", strategy_options=options, model="tiny")
    back = spec_from_run_config(spec_to_run_config(spec))
    assert FerretConfig.from_dict(back.strategy_options) == FerretConfig.from_dict(options)
