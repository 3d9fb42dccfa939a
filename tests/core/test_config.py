"""Tests for fedft.core.config: typed from_dict, validation, help text and CLI overrides."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from fedft.core.config import ConfigError, StrategyConfig, option, parse_overrides
from fedft.core.errors import UsageError
from fedft.core.registry import available_strategies, get_strategy


@dataclasses.dataclass(frozen=True)
class DemoConfig(StrategyConfig):
    """A config with one field of every supported kind."""

    steps: int = option(3, "number of steps")
    lr: float = option(0.5, "learning rate")
    verbose: bool = option(False, "print more")
    name: str = option("demo", "a label")
    modules: tuple[str, ...] = option(("a", "b"), "module names")
    limit: int | None = option(None, "optional cap")
    scale: float | None = option(None, "optional scale")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError("demo: steps must be >= 1")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("demo: limit must be >= 0")


def test_defaults_and_from_empty_dict() -> None:
    assert DemoConfig.from_dict({}) == DemoConfig()
    assert DemoConfig().modules == ("a", "b")
    assert DemoConfig().limit is None


def test_from_dict_reads_every_field_type() -> None:
    cfg = DemoConfig.from_dict(
        {
            "steps": 7,
            "lr": 0.25,
            "verbose": True,
            "name": "x",
            "modules": ["q", "v", "o"],
            "limit": 4,
            "scale": 2.5,
        }
    )
    assert cfg == DemoConfig(
        steps=7, lr=0.25, verbose=True, name="x", modules=("q", "v", "o"), limit=4, scale=2.5
    )
    # A list from the wire becomes the declared tuple (so the config stays hashable).
    assert isinstance(cfg.modules, tuple)
    hash(cfg)


def test_from_dict_drops_unknown_keys_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedft.core.config"):
        cfg = DemoConfig.from_dict({"steps": 2, "zeta": 1, "alpha_new": "x"})
    assert cfg.steps == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "DemoConfig" in message
    assert "alpha_new" in message
    assert "zeta" in message


def test_from_dict_without_unknown_keys_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedft.core.config"):
        DemoConfig.from_dict({"steps": 2})
    assert not caplog.records


def test_int_is_widened_to_float() -> None:
    cfg = DemoConfig.from_dict({"lr": 1, "scale": 3})
    assert cfg.lr == 1.0
    assert type(cfg.lr) is float
    assert type(cfg.scale) is float


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("steps", True),  # bool is an int subclass but never a valid int option
        ("steps", 2.0),
        ("steps", "3"),
        ("lr", "0.1"),
        ("lr", False),
        ("verbose", 1),
        ("verbose", "true"),
        ("name", 5),
        ("modules", "q,v"),
        ("modules", ["q", 1]),
        ("limit", 1.5),
        ("limit", True),
        ("scale", "x"),
    ],
)
def test_wrong_types_raise_config_error(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        DemoConfig.from_dict({key: value})


def test_config_error_is_a_usage_error() -> None:
    assert issubclass(ConfigError, UsageError)
    with pytest.raises(UsageError):
        DemoConfig.from_dict({"steps": "many"})


def test_post_init_validation_runs_on_from_dict_and_replace() -> None:
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        DemoConfig.from_dict({"steps": 0})
    with pytest.raises(ConfigError, match="limit must be >= 0"):
        DemoConfig(limit=-1)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        DemoConfig().replace(steps=-5)
    assert DemoConfig().replace(steps=9).steps == 9


def test_config_is_frozen() -> None:
    cfg = DemoConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 4  # type: ignore[misc]


def test_to_dict_gives_wire_values_and_round_trips() -> None:
    cfg = DemoConfig(steps=5, lr=0.1, verbose=True, name="n", modules=("x",), limit=0, scale=1.5)
    wire = cfg.to_dict()
    assert wire == {
        "steps": 5,
        "lr": 0.1,
        "verbose": True,
        "name": "n",
        "modules": ["x"],
        "limit": 0,
        "scale": 1.5,
    }
    assert isinstance(wire["modules"], list)
    assert DemoConfig.from_dict(wire) == cfg
    assert DemoConfig.from_dict(DemoConfig().to_dict()) == DemoConfig()


def test_fields_help_lists_help_and_defaults() -> None:
    help_ = DemoConfig.fields_help()
    assert list(help_) == ["steps", "lr", "verbose", "name", "modules", "limit", "scale"]
    assert help_["steps"] == ("number of steps", 3)
    assert help_["modules"] == ("module names", ("a", "b"))
    assert help_["limit"] == ("optional cap", None)


@pytest.mark.parametrize(
    ("pair", "key", "expected"),
    [
        ("steps=12", "steps", 12),
        ("lr=3e-4", "lr", 3e-4),
        ("lr=2", "lr", 2.0),
        ("name=hello world", "name", "hello world"),
        ("name= padded ", "name", "padded"),
        ("modules=q_proj, v_proj,,o_proj", "modules", ["q_proj", "v_proj", "o_proj"]),
        ("modules=", "modules", []),
        ("limit=5", "limit", 5),
        ("limit=none", "limit", None),
        ("limit=NULL", "limit", None),
        ("limit=", "limit", None),
        ("scale=0.5", "scale", 0.5),
        ("scale=None", "scale", None),
    ],
)
def test_parse_overrides_reads_each_type(pair: str, key: str, expected: Any) -> None:
    parsed = parse_overrides(DemoConfig, [pair])
    assert parsed == {key: expected}
    assert type(parsed[key]) is type(expected)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("1", True),
        ("true", True),
        ("True", True),
        ("yes", True),
        ("ON", True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_parse_overrides_bool_words(word: str, expected: bool) -> None:
    assert parse_overrides(DemoConfig, [f"verbose={word}"]) == {"verbose": expected}


def test_parse_overrides_accepts_dashes_and_feeds_from_dict() -> None:
    @dataclasses.dataclass(frozen=True)
    class Dashed(StrategyConfig):
        local_steps: int = option(1, "steps")

    assert parse_overrides(Dashed, ["local-steps=4"]) == {"local_steps": 4}
    parsed = parse_overrides(DemoConfig, ["steps=2", "modules=k,v", "verbose=yes", "limit=none"])
    assert DemoConfig.from_dict(parsed) == DemoConfig(
        steps=2, modules=("k", "v"), verbose=True, limit=None
    )


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("unknown=1", "no option 'unknown'"),
        ("steps", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("steps=many", "cannot read 'many' as int"),
        ("steps=1.5", "cannot read '1.5' as int"),
        ("lr=fast", "cannot read 'fast' as float"),
        ("verbose=maybe", "cannot read 'maybe' as bool"),
        ("limit=lots", "cannot read 'lots' as int"),
    ],
)
def test_parse_overrides_rejects_bad_input(pair: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_overrides(DemoConfig, [pair])


def test_parse_overrides_unknown_key_lists_the_options() -> None:
    with pytest.raises(ConfigError) as info:
        parse_overrides(DemoConfig, ["nope=1"])
    assert "lr" in str(info.value)
    assert "modules" in str(info.value)


# Built-ins only: a third-party plugin installed in the environment is not ours to judge here.
STRATEGIES = [
    name
    for name in available_strategies()
    if get_strategy(name).server_cls.__module__.startswith("fedft.strategies.")
]


def test_some_strategy_is_registered() -> None:
    assert "fedavg_lora" in STRATEGIES


@pytest.mark.parametrize("name", STRATEGIES)
def test_registered_config_round_trips(name: str) -> None:
    config_cls = get_strategy(name).config_cls
    default = config_cls()
    wire = default.to_dict()
    assert config_cls.from_dict(wire) == default
    # Every wire value is a plain scalar or a list of them.
    for value in wire.values():
        assert isinstance(value, (bool, int, float, str, list)) or value is None


@pytest.mark.parametrize("name", STRATEGIES)
def test_registered_config_fields_have_help(name: str) -> None:
    config_cls = get_strategy(name).config_cls
    help_ = config_cls.fields_help()
    assert help_, f"{name} has no options"
    for field_name, (text, _default) in help_.items():
        assert text.strip(), f"{name}.{field_name} has no help text"


@pytest.mark.parametrize("name", STRATEGIES)
def test_registered_config_overrides_parse_back(name: str) -> None:
    """Every default, written as a command-line override, parses back to itself."""
    config_cls = get_strategy(name).config_cls
    default = config_cls()
    pairs = []
    for key, value in default.to_dict().items():
        if isinstance(value, list):
            text = ",".join(str(v) for v in value)
        elif value is None:
            text = "none"
        else:
            text = str(value)
        pairs.append(f"{key}={text}")
    assert config_cls.from_dict(parse_overrides(config_cls, pairs)) == default


def test_fields_help_lists_a_subclass_own_options_first() -> None:
    from fedft.strategies.fedavg_lora import FedAvgLoRAConfig
    from fedft.strategies.legend.config import LegendConfig

    assert list(FedAvgLoRAConfig.fields_help())[:2] == ["rank", "alpha"]
    assert list(FedAvgLoRAConfig.fields_help())[-2:] == ["fraction", "min_clients"]
    names = list(LegendConfig.fields_help())
    assert names[:3] == ["min_depth", "balance", "global_rank"]
    assert names.index("max_rank") < names.index("alpha") < names.index("fraction")
    assert set(names) == set(LegendConfig().to_dict())
