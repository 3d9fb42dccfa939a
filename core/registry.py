"""The strategy registry: explicit, validated registration plus entry-point discovery."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from fedft.core.config import StrategyConfig
from fedft.core.errors import UsageError
from fedft.core.strategy import ClientStrategy, ServerStrategy

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fedft.strategies"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RegistryError(ValueError):
    """A registration that would leave the registry inconsistent."""


@dataclass(frozen=True)
class StrategySpec:
    """One registered algorithm: its name, config type and the two halves."""

    name: str
    config_cls: type[StrategyConfig]
    server_cls: type[ServerStrategy[Any]]
    client_cls: type[ClientStrategy[Any]]
    summary: str

    def make_config(self, values: dict[str, Any] | None = None) -> StrategyConfig:
        """Build this strategy's config from plain values (unknown keys dropped with a warning)."""
        return self.config_cls.from_dict(values or {})


_registry: dict[str, StrategySpec] = {}
_discovered = False


def register_strategy(
    *,
    name: str,
    config_cls: type[StrategyConfig],
    server_cls: type[ServerStrategy[Any]],
    client_cls: type[ClientStrategy[Any]],
    summary: str = "",
) -> StrategySpec:
    """Register a strategy; re-registering the very same classes is a no-op."""
    if not _NAME.match(name):
        raise RegistryError(f"strategy name {name!r} must be lowercase letters, digits and _")
    checks = (
        (config_cls, StrategyConfig, "config_cls"),
        (server_cls, ServerStrategy, "server_cls"),
        (client_cls, ClientStrategy, "client_cls"),
    )
    for cls, base, role in checks:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise RegistryError(f"{name}: {role} must subclass {base.__name__}, got {cls!r}")
    # is_dataclass() is inherited from StrategyConfig, so check that the class itself is one.
    if not (dataclasses.is_dataclass(config_cls) and "__dataclass_fields__" in vars(config_cls)):
        raise RegistryError(f"{name}: config_cls {config_cls.__name__} must be a dataclass")
    for cls in (server_cls, client_cls):
        if getattr(cls, "__abstractmethods__", None):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise RegistryError(f"{name}: {cls.__name__} does not implement {missing}")
    doc = (server_cls.__doc__ or "").strip().splitlines()
    spec = StrategySpec(
        name, config_cls, server_cls, client_cls, summary or (doc[0] if doc else "")
    )
    existing = _registry.get(name)
    if existing is not None:
        same = (existing.config_cls, existing.server_cls, existing.client_cls) == (
            config_cls,
            server_cls,
            client_cls,
        )
        if same:
            return existing
        raise RegistryError(f"strategy {name!r} is already registered by {existing.server_cls!r}")
    _registry[name] = spec
    return spec


def unregister_strategy(name: str) -> None:
    """Remove a strategy (tests and plugin reloads use this)."""
    _registry.pop(name, None)


def discover() -> None:
    """Import every package named in the ``fedft.strategies`` entry-point group, once.

    Built-ins are listed there too, so third-party plugins and built-ins load the same way. A
    plugin that fails to import is logged and skipped: one broken package must not take the
    coordinator down.
    """
    global _discovered  # noqa: PLW0603 - discovery is a process-wide, one-time action
    if _discovered:
        return
    _discovered = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:  # any import error in third-party code
            logger.warning("could not load strategy plugin %s (%s): %s", ep.name, ep.value, exc)
            continue
        if callable(loaded) and not isinstance(loaded, type):
            loaded()


def get_strategy(name: str) -> StrategySpec:
    """Return a registered strategy, or raise a UsageError that lists the known ones."""
    discover()
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(available_strategies()) or "none"
        raise UsageError(f"unknown strategy {name!r} (available: {known})") from None


def available_strategies() -> list[str]:
    """Return the names of all registered strategies, sorted."""
    discover()
    return sorted(_registry)
