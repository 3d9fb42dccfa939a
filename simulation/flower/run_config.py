"""A simulation spec as a Flower run config (flat ``key = value`` pairs) and back.

``flwr run`` hands every ServerApp and ClientApp the ``[tool.flwr.app.config]`` table of the app's
pyproject, with nested tables flattened to dotted keys. Spec fields keep their ``--flag`` names
(``max-length``), the round count uses Flower's usual ``num-server-rounds``, and strategy options
go under ``opt.`` (``opt.lr = 5e-4``), read with the same parser as ``fedft simulate --opt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedft.core.config import ConfigError, format_option, parse_overrides
from fedft.core.errors import UsageError
from fedft.simulation.engine import build_strategy
from fedft.simulation.spec import SimulationSpec

OPTION_PREFIX = "opt."
ROUNDS_KEY = "num-server-rounds"
# Spec fields that have no meaning inside a Flower app: Flower is the engine, and Ray's
# resources come from the federation's own configuration. Everything else (DP, quantization,
# device, device mixes) travels, since the apps assemble their runs like every other host.
_NOT_IN_APP = frozenset(
    {"strategy_options", "rounds", "engine", "cpus_per_client", "gpus_per_client", "ray_address"}
)


def _key(field: str) -> str:
    return field.replace("_", "-")


def spec_to_run_config(spec: SimulationSpec) -> dict[str, bool | int | float | str]:
    """Flatten a spec into the run-config pairs :func:`spec_from_run_config` reads back."""
    config: dict[str, bool | int | float | str] = {ROUNDS_KEY: spec.rounds}
    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        if field.name in _NOT_IN_APP or value is None:  # a run config has no None: unset it
            continue
        config[_key(field.name)] = str(value) if isinstance(value, Path) else value
    for name, value in spec.strategy_options.items():
        config[OPTION_PREFIX + name] = format_option(value)
    return config


def spec_from_run_config(
    config: Mapping[str, Any], *, clients: int | None = None
) -> SimulationSpec:
    """Build a validated spec from a run config; ``clients`` overrides the client count.

    A ClientApp passes the federation's ``num-partitions`` as ``clients``, so every node splits
    the data the same way whatever the app's default says.
    """
    fields = {f.name: f for f in dataclasses.fields(SimulationSpec)}
    values: dict[str, Any] = {}
    options: list[str] = []
    for key, value in config.items():
        if key.startswith(OPTION_PREFIX):
            options.append(f"{key.removeprefix(OPTION_PREFIX)}={value}")
        elif key == ROUNDS_KEY:
            values["rounds"] = int(value)
        else:
            name = key.replace("-", "_")
            if name not in fields or name in _NOT_IN_APP:
                raise UsageError(f"unknown run-config key {key!r}")
            values[name] = Path(value) if name == "out" else value
    if clients is not None:
        values["clients"] = clients
    base = SimulationSpec(**values, engine="flower")
    strategy, _ = build_strategy(base)
    try:
        parsed = parse_overrides(strategy.config_cls, options)
    except ConfigError as exc:
        raise UsageError(f"{base.strategy}: {exc}") from exc
    spec = dataclasses.replace(base, strategy_options=parsed)
    build_strategy(spec)  # validate the options
    return spec
