"""What a strategy plugin needs, in one place: ``from fedft.core import ServerStrategy, ...``.

The rest of core (seeded RNG contract, serde, identity, chunking) is for hosts and advanced
strategies, imported from its module. Names load on first use (PEP 562), so that importing
``fedft.core.errors`` from the command line (``fedft --help``) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedft.core.config import ConfigError as ConfigError
    from fedft.core.config import StrategyConfig as StrategyConfig
    from fedft.core.config import option as option
    from fedft.core.errors import UsageError as UsageError
    from fedft.core.payload import ConfigValue as ConfigValue
    from fedft.core.payload import MetricValue as MetricValue
    from fedft.core.payload import Payload as Payload
    from fedft.core.payload import config_float as config_float
    from fedft.core.payload import config_int as config_int
    from fedft.core.registry import RegistryError as RegistryError
    from fedft.core.registry import StrategySpec as StrategySpec
    from fedft.core.registry import available_strategies as available_strategies
    from fedft.core.registry import get_strategy as get_strategy
    from fedft.core.registry import register_strategy as register_strategy
    from fedft.core.registry import unregister_strategy as unregister_strategy
    from fedft.core.sampling import client_seed as client_seed
    from fedft.core.sampling import sample_clients as sample_clients
    from fedft.core.strategy import ClientInfo as ClientInfo
    from fedft.core.strategy import ClientStrategy as ClientStrategy
    from fedft.core.strategy import Failure as Failure
    from fedft.core.strategy import LinearUpdates as LinearUpdates
    from fedft.core.strategy import Result as Result
    from fedft.core.strategy import ServerStrategy as ServerStrategy
    from fedft.core.strategy import Task as Task
    from fedft.core.trainer import LoraSpec as LoraSpec
    from fedft.core.trainer import Trainer as Trainer
    from fedft.core.trainer import TrainStats as TrainStats

# Public name -> the core module that defines it.
_HOME = {
    "ConfigError": "config",
    "StrategyConfig": "config",
    "option": "config",
    "UsageError": "errors",
    "ConfigValue": "payload",
    "MetricValue": "payload",
    "Payload": "payload",
    "config_float": "payload",
    "config_int": "payload",
    "RegistryError": "registry",
    "StrategySpec": "registry",
    "available_strategies": "registry",
    "get_strategy": "registry",
    "register_strategy": "registry",
    "unregister_strategy": "registry",
    "client_seed": "sampling",
    "sample_clients": "sampling",
    "ClientInfo": "strategy",
    "ClientStrategy": "strategy",
    "Failure": "strategy",
    "LinearUpdates": "strategy",
    "Result": "strategy",
    "ServerStrategy": "strategy",
    "Task": "strategy",
    "LoraSpec": "trainer",
    "Trainer": "trainer",
    "TrainStats": "trainer",
}

__all__ = [
    "ClientInfo",
    "ClientStrategy",
    "ConfigError",
    "ConfigValue",
    "Failure",
    "LinearUpdates",
    "LoraSpec",
    "MetricValue",
    "Payload",
    "RegistryError",
    "Result",
    "ServerStrategy",
    "StrategyConfig",
    "StrategySpec",
    "Task",
    "TrainStats",
    "Trainer",
    "UsageError",
    "available_strategies",
    "client_seed",
    "config_float",
    "config_int",
    "get_strategy",
    "option",
    "register_strategy",
    "sample_clients",
    "unregister_strategy",
]


def __getattr__(name: str) -> Any:
    """Import a facade name from its module on first use, then keep it here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the facade's names beside the module's own."""
    return sorted({*globals(), *__all__})
