"""``fedft strategies NAME --preset NAME`` and ``--opt preset=NAME``: a paper's settings."""

from __future__ import annotations

import pytest

from fedft.cli.main import main
from fedft.core.config import ConfigError, parse_overrides
from fedft.core.registry import get_strategy
from fedft.simulation.cli import spec_from_args
from fedft.strategies import BUILT_IN
from fedft.strategies.fedkseed import FedKSeedConfig
from fedft.strategies.ferret import FerretConfig


def test_fedkseed_paper_preset_prints_values_differences_and_gaps(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["strategies", "fedkseed", "--preset", "paper"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("3e-07", "0.0005", "4096", "200", "0.05", "changed", "cannot be matched"):
        assert text in out
    assert "differs from the defaults in: eps, fraction, lr" in out


def test_unknown_preset_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strategies", "fedkseed", "--preset", "nope"]) != 0
    assert "presets: paper" in capsys.readouterr().err


def test_opt_preset_applies_and_explicit_options_win() -> None:
    values = parse_overrides(FedKSeedConfig, ["lr=1e-4", "preset=paper"])
    config = FedKSeedConfig.from_dict(values)
    assert (config.lr, config.eps, config.seeds, config.local_steps) == (1e-4, 5e-4, 4096, 200)
    assert config.fraction == 0.05
    with pytest.raises(ConfigError, match="no preset"):
        parse_overrides(FedKSeedConfig, ["preset=nope"])


def test_ferret_paper_preset_is_sgd_without_clipping_and_equal_weights() -> None:
    config = FerretConfig.from_dict(parse_overrides(FerretConfig, ["preset=paper"]))
    assert (config.optimizer, config.lr, config.local_steps, config.seeds) == ("sgd", 1e-4, 10, 200)
    assert config.max_grad_norm == 0.0  # unclipped; the wire has no None
    assert FerretConfig.from_dict(config.to_dict()) == config
    assert config.equal_weight
    assert config.block_order == "module"
    assert config.data_order == "persistent"
    dolly = FerretConfig.from_dict(parse_overrides(FerretConfig, ["preset=paper-dolly"]))
    assert config.server_lr == pytest.approx(10 / 3)
    assert dolly.server_lr == 1.0


def test_every_preset_builds_a_valid_config() -> None:
    for name in BUILT_IN:  # not whatever third-party plugins are installed
        config_cls = get_strategy(name).config_cls
        for preset in config_cls.presets():
            config_cls.from_dict(parse_overrides(config_cls, [f"preset={preset}"]))


def test_simulate_preset_flag() -> None:
    from fedft.cli.main import build_parser

    args = build_parser().parse_args(
        ["simulate", "--strategy", "fedkseed", "--preset", "paper", "--opt", "eps=1e-3"]
    )
    options = spec_from_args(args).strategy_options
    assert options["lr"] == 3e-7
    assert options["eps"] == 1e-3
