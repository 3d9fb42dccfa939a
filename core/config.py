"""Typed strategy configs: dataclasses with help text, validation, and tolerance of unknown keys."""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from fedft.core.errors import UsageError
from fedft.core.payload import ConfigValue

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound="StrategyConfig")


class ConfigError(UsageError):
    """A config value is missing, of the wrong type, or out of range."""


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """Declare a config field with its default and the help text that ``fedft`` prints."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _coerce(cls_name: str, name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against a field's type hint, widening int to float where a float is asked."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return _coerce(cls_name, name, arm, value)
            except ConfigError:
                continue
        raise ConfigError(f"{cls_name}.{name}: {value!r} matches none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{cls_name}.{name}: expected None, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{cls_name}.{name}: expected a list, got {type(value).__name__}")
        (arm, *_) = typing.get_args(hint) or (Any,)
        items = [_coerce(cls_name, name, arm, v) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{cls_name}.{name}: expected int, got bool")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(
            f"{cls_name}.{name}: expected {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named set of option values (e.g. a paper's), and what it cannot match."""

    values: Mapping[str, Any]
    source: str
    unmatched: tuple[str, ...] = ()


PRESET_KEY = "preset"


@dataclasses.dataclass(frozen=True)
class StrategyConfig:
    """Base class of every strategy's config.

    Subclasses are frozen dataclasses whose fields are declared with :func:`option` and whose
    ``__post_init__`` raises :class:`ConfigError` for values out of range.
    """

    @classmethod
    def fields_help(cls) -> dict[str, tuple[str, Any]]:
        """Return ``{field: (help, default)}`` for documentation and ``--help`` output.

        A strategy's own options come first, then those of the shared option groups it inherits
        (dataclasses list inherited fields first, which would bury what is specific).
        """
        declared: dict[str, int] = {}
        for depth, klass in enumerate(cls.__mro__):
            for name in vars(klass).get("__annotations__", {}):
                declared.setdefault(name, depth)
        ordered = sorted(
            (f for f in dataclasses.fields(cls) if f.init), key=lambda f: declared.get(f.name, 0)
        )
        return {f.name: (str(f.metadata.get("help", "")), f.default) for f in ordered}

    @classmethod
    def presets(cls) -> dict[str, Preset]:
        """Named option sets (``--opt preset=NAME``); strategies override this."""
        return {}

    @classmethod
    def preset(cls, name: str) -> Preset:
        """Return preset ``name``, raising :class:`ConfigError` with the known names."""
        known = cls.presets()
        if name not in known:
            names = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{cls.__name__} has no preset {name!r}; presets: {names}")
        return known[name]

    @classmethod
    def preset_diff(cls, name: str) -> list[tuple[str, Any, Any]]:
        """``(option, default, preset value)`` for each option the preset changes."""
        defaults = {k: d for k, (_, d) in cls.fields_help().items()}
        values = cls.preset(name).values
        return [(k, defaults[k], v) for k, v in values.items() if defaults[k] != v]

    @classmethod
    def from_dict(cls: type[ConfigT], values: Mapping[str, Any]) -> ConfigT:
        """Build a config from plain values; unknown keys (a newer peer's) are dropped, warned."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.warning("%s: ignoring unknown config keys %s", cls.__name__, ", ".join(unknown))
        kwargs = {k: _coerce(cls.__name__, k, hints[k], v) for k, v in values.items() if k in known}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, ConfigValue]:
        """Return the config as flat wire values (tuples become lists)."""
        out: dict[str, ConfigValue] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def format_option(value: Any) -> str:
    """An option value as ``--opt KEY=VALUE`` spells it, which :func:`parse_overrides` reads."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def parse_overrides(cls: type[StrategyConfig], pairs: list[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` command-line overrides using the config class's field types.

    ``preset=NAME`` expands to the preset's values first; every explicit ``KEY=VALUE`` wins
    over it, wherever it stands on the command line.
    """
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    out: dict[str, Any] = {}
    base: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {pair!r}")
        if key == PRESET_KEY:
            base.update(cls.preset(raw.strip()).values)
            continue
        if key not in known:
            raise ConfigError(
                f"{cls.__name__} has no option {key!r}; options: {', '.join(sorted(known))}"
            )
        out[key] = _parse_scalar_or_list(hints[key], raw.strip(), key)
    return {**base, **out}


def _parse_scalar_or_list(hint: Any, raw: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        (arm, *_) = typing.get_args(hint) or (str,)
        return [
            _parse_scalar_or_list(arm, part.strip(), key) for part in raw.split(",") if part.strip()
        ]
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", ""):
            return None
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return _parse_scalar_or_list(arms[0], raw, key)
    try:
        if hint is bool:
            return _parse_bool(raw)
        if hint in (int, float):
            return hint(raw)
    except ValueError:
        raise ConfigError(f"option {key}: cannot read {raw!r} as {hint.__name__}") from None
    return raw


def _parse_bool(raw: str) -> bool:
    words = {"1": True, "true": True, "yes": True, "on": True}
    words.update({"0": False, "false": False, "no": False, "off": False})
    if raw.lower() not in words:
        raise ValueError(raw)
    return words[raw.lower()]
