"""Tests for fedft.core.registry: validated registration and real entry-point discovery."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fedft.core import registry
from fedft.core.config import StrategyConfig, option
from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.registry import (
    ENTRY_POINT_GROUP,
    RegistryError,
    available_strategies,
    get_strategy,
    register_strategy,
    unregister_strategy,
)
from fedft.core.strategy import ClientInfo, ClientStrategy, Failure, Result, ServerStrategy, Task
from fedft.core.trainer import Trainer
from fedft.strategies.fedavg_lora import FedAvgLoRAClient, FedAvgLoRAConfig, FedAvgLoRAServer


@dataclasses.dataclass(frozen=True)
class ToyConfig(StrategyConfig):
    """Config of the toy strategy."""

    steps: int = option(1, "steps")


class ToyServer(ServerStrategy[ToyConfig]):
    """Toy server half for registry tests.

    More text that the summary must not include.
    """

    def initialize(self, initial: Payload) -> None:
        self.state = initial

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        return []

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        return {}

    def global_state(self) -> Payload:
        return Payload()

    def state_dict(self) -> Payload:
        return Payload()

    def load_state_dict(self, state: Payload) -> None:
        self.state = state


class ToyClient(ClientStrategy[ToyConfig]):
    def prepare(self, trainer: Trainer) -> None:
        return None

    def initial_state(self, trainer: Trainer) -> Payload:
        return Payload()

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        return Payload()

    def load_global(self, state: Payload, trainer: Trainer) -> None:
        return None


class HalfServer(ServerStrategy[ToyConfig]):
    """Misses aggregate and state_dict."""

    def initialize(self, initial: Payload) -> None:
        return None

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        return []

    def global_state(self) -> Payload:
        return Payload()

    def load_state_dict(self, state: Payload) -> None:
        return None


class HalfClient(ClientStrategy[ToyConfig]):
    def prepare(self, trainer: Trainer) -> None:
        return None


class PlainConfig(StrategyConfig):
    """A StrategyConfig subclass that forgot its @dataclass decorator."""

    steps: int = 1


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Give each test its own copy of the registry; the real one is restored afterwards."""
    registry.discover()  # the built-ins first, so the copy keeps them
    table = dict(registry._registry)
    monkeypatch.setattr(registry, "_registry", table)
    monkeypatch.setattr(registry, "_discovered", True)
    return table


def register_toy(name: str = "toy", **overrides: Any) -> registry.StrategySpec:
    kwargs: dict[str, Any] = {
        "name": name,
        "config_cls": ToyConfig,
        "server_cls": ToyServer,
        "client_cls": ToyClient,
    }
    kwargs.update(overrides)
    return register_strategy(**kwargs)


def test_register_and_get(isolated_registry: dict[str, Any]) -> None:
    spec = register_toy()
    assert get_strategy("toy") is spec
    assert "toy" in available_strategies()
    assert available_strategies() == sorted(available_strategies())
    assert spec.summary == "Toy server half for registry tests."
    # The name lives in the spec only: the registry leaves the plugin's classes untouched.
    assert spec.name == "toy"
    assert "name" not in vars(ToyServer)
    assert "name" not in vars(ToyClient)
    config = spec.make_config({"steps": 4})
    assert config == ToyConfig(steps=4)
    assert spec.make_config() == ToyConfig()
    unregister_strategy("toy")
    assert "toy" not in available_strategies()
    unregister_strategy("toy")  # removing twice is harmless


def test_explicit_summary_wins(isolated_registry: dict[str, Any]) -> None:
    assert register_toy(summary="custom words").summary == "custom words"


@pytest.mark.parametrize(
    "name", ["", "Toy", "1toy", "_toy", "toy-lora", "toy lora", "toy.lora", "a" * 65]
)
def test_bad_names_are_rejected(isolated_registry: dict[str, Any], name: str) -> None:
    with pytest.raises(RegistryError, match="lowercase"):
        register_toy(name)
    assert name not in isolated_registry


def test_longest_allowed_name(isolated_registry: dict[str, Any]) -> None:
    assert register_toy("a" * 64).name == "a" * 64


@pytest.mark.parametrize(
    ("role", "value"),
    [
        ("config_cls", dict),
        ("config_cls", ToyConfig()),
        ("server_cls", ToyClient),
        ("server_cls", object),
        ("client_cls", ToyServer),
        ("client_cls", "ToyClient"),
    ],
)
def test_non_subclasses_are_rejected(
    isolated_registry: dict[str, Any], role: str, value: Any
) -> None:
    with pytest.raises(RegistryError, match=f"{role} must subclass"):
        register_toy(**{role: value})
    assert "toy" not in isolated_registry


def test_abstract_server_is_rejected_naming_missing_methods(
    isolated_registry: dict[str, Any],
) -> None:
    with pytest.raises(RegistryError, match="HalfServer does not implement aggregate, state_dict"):
        register_toy(server_cls=HalfServer)


def test_abstract_client_is_rejected_naming_missing_methods(
    isolated_registry: dict[str, Any],
) -> None:
    with pytest.raises(
        RegistryError, match="HalfClient does not implement initial_state, load_global, run"
    ):
        register_toy(client_cls=HalfClient)


def test_non_dataclass_config_is_rejected(isolated_registry: dict[str, Any]) -> None:
    with pytest.raises(RegistryError, match="must be a dataclass"):
        register_toy(config_cls=PlainConfig)


def test_same_classes_again_is_a_no_op(isolated_registry: dict[str, Any]) -> None:
    first = register_toy()
    again = register_toy(summary="ignored")
    assert again is first
    assert isolated_registry["toy"] is first


def test_duplicate_name_with_other_classes_is_rejected(isolated_registry: dict[str, Any]) -> None:
    @dataclasses.dataclass(frozen=True)
    class OtherConfig(StrategyConfig):
        steps: int = option(2, "steps")

    first = register_toy()
    with pytest.raises(RegistryError, match="already registered"):
        register_toy(config_cls=OtherConfig)
    with pytest.raises(RegistryError, match="already registered"):
        register_toy("fedavg_lora")
    assert isolated_registry["toy"] is first
    assert isolated_registry["fedavg_lora"].server_cls is FedAvgLoRAServer


def test_unknown_strategy_is_a_usage_error_listing_known_ones() -> None:
    with pytest.raises(UsageError, match="unknown strategy 'no_such_thing'") as info:
        get_strategy("no_such_thing")
    assert "fedavg_lora" in str(info.value)
    for name in available_strategies():
        assert name in str(info.value)


def test_fedavg_lora_is_registered() -> None:
    spec = get_strategy("fedavg_lora")
    assert spec.config_cls is FedAvgLoRAConfig
    assert spec.server_cls is FedAvgLoRAServer
    assert spec.client_cls is FedAvgLoRAClient
    assert spec.name == "fedavg_lora"
    assert spec.summary
    assert "fedavg_lora" in available_strategies()


def test_built_ins_are_exactly_the_declared_entry_points() -> None:
    from importlib.metadata import distribution

    from fedft.strategies import BUILT_IN

    declared = {
        ep.name for ep in distribution("fedft").entry_points if ep.group == ENTRY_POINT_GROUP
    }
    assert declared == set(BUILT_IN)
    assert set(BUILT_IN) <= set(available_strategies())


def test_fedavg_lora_comes_back_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-ins are discovered like plugins: from the installed package's entry points."""
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    # A stale ``fedft.egg-info`` in the working directory shadows the installed metadata.
    assert declared.get("fedavg_lora") == "fedft.strategies.fedavg_lora:register", declared
    monkeypatch.setattr(registry, "_registry", {})
    monkeypatch.setattr(registry, "_discovered", False)
    assert get_strategy("fedavg_lora").server_cls is FedAvgLoRAServer


PLUGIN_SOURCE = '''\
"""A third-party fedft strategy, installed only for the registry tests."""

from __future__ import annotations

import dataclasses

from fedft.core.config import StrategyConfig, option
from fedft.core.payload import Payload
from fedft.core.registry import register_strategy
from fedft.core.strategy import ClientStrategy, ServerStrategy

CALLS = []


@dataclasses.dataclass(frozen=True)
class PluginConfig(StrategyConfig):
    rounds: int = option(2, "how many rounds")


class PluginServer(ServerStrategy[PluginConfig]):
    """Server half of the test plugin."""

    def initialize(self, initial):
        pass

    def configure(self, server_round, clients):
        return []

    def aggregate(self, server_round, results, failures):
        return {}

    def global_state(self):
        return Payload()

    def state_dict(self):
        return Payload()

    def load_state_dict(self, state):
        pass


class PluginClient(ClientStrategy[PluginConfig]):
    def prepare(self, trainer):
        pass

    def initial_state(self, trainer):
        return Payload()

    def run(self, task, local_state, trainer):
        return Payload()

    def load_global(self, state, trainer):
        pass


def register():
    CALLS.append(1)
    register_strategy(
        name="testplugin",
        config_cls=PluginConfig,
        server_cls=PluginServer,
        client_cls=PluginClient,
    )
'''


def install_dist(site: Path, dist: str, module: str, source: str, entry: str) -> None:
    """Lay out a module plus its ``.dist-info`` the way pip installs a plugin package."""
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry}\n", encoding="utf-8")


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake site-packages on sys.path and a registry that has not discovered anything yet."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_discovered", False)
    yield tmp_path
    unregister_strategy("testplugin")
    for module in ("fedft_test_plugin", "fedft_broken_plugin"):
        sys.modules.pop(module, None)


def test_entry_point_plugin_is_discovered(plugin_site: Path) -> None:
    install_dist(
        plugin_site,
        "fedft_test_plugin",
        "fedft_test_plugin",
        PLUGIN_SOURCE,
        "testplugin = fedft_test_plugin:register",
    )
    assert "fedft_test_plugin" not in sys.modules
    spec = get_strategy("testplugin")
    plugin = sys.modules["fedft_test_plugin"]
    assert spec.name == "testplugin"
    assert spec.server_cls is plugin.PluginServer
    assert spec.client_cls is plugin.PluginClient
    assert spec.summary == "Server half of the test plugin."
    assert spec.make_config({"rounds": 5}) == plugin.PluginConfig(rounds=5)
    assert "testplugin" in available_strategies()
    # Built-ins come through the same discovery and stay available.
    assert "fedavg_lora" in available_strategies()
    # Discovery runs once per process: later lookups do not call register() again.
    get_strategy("testplugin")
    assert plugin.CALLS == [1]
    unregister_strategy("testplugin")
    with pytest.raises(UsageError, match="testplugin"):
        get_strategy("testplugin")


def test_broken_plugin_is_skipped_with_a_warning(
    plugin_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install_dist(
        plugin_site,
        "fedft_broken_plugin",
        "fedft_broken_plugin",
        'raise ImportError("needs a library that is not installed")\n',
        "broken = fedft_broken_plugin:register",
    )
    install_dist(
        plugin_site,
        "fedft_test_plugin",
        "fedft_test_plugin",
        PLUGIN_SOURCE,
        "testplugin = fedft_test_plugin:register",
    )
    with caplog.at_level(logging.WARNING, logger="fedft.core.registry"):
        spec = get_strategy("testplugin")
    assert spec.name == "testplugin"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken" in warnings[0]
    assert "fedft_broken_plugin:register" in warnings[0]
    assert "needs a library that is not installed" in warnings[0]
    assert "broken" not in available_strategies()
