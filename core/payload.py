"""Framework-neutral payloads: named tensors of any dtype, a flat config and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import torch

Scalar: TypeAlias = bool | int | float | str
ConfigValue: TypeAlias = Scalar | list[bool] | list[int] | list[float] | list[str]
MetricValue: TypeAlias = int | float

# bf16 and the float8 types have no numpy equivalent, which is why payloads hold torch tensors.
SUPPORTED_DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in SUPPORTED_DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """Return the wire name of a torch dtype, or raise ValueError if payloads cannot carry it."""
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"unsupported tensor dtype {dtype}") from None


def _check_config_value(key: str, value: object) -> None:
    if isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        if len(kinds) <= 1 and kinds <= {bool, int, float, str}:
            return
        raise TypeError(
            f"config[{key!r}]: a list must hold one scalar type, "
            f"got {sorted(k.__name__ for k in kinds)}"
        )
    raise TypeError(f"config[{key!r}]: unsupported value type {type(value).__name__}")


@dataclass
class Payload:
    """What one message between the server and a client carries.

    It is deliberately isomorphic to a Flower ``RecordDict`` (ArrayRecord, ConfigRecord,
    MetricRecord) so that every host can translate it with a thin codec.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict[str, ConfigValue] = field(default_factory=dict)
    metrics: dict[str, MetricValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tensor in self.tensors.items():
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"tensors[{name!r}] is {type(tensor).__name__}, not a torch.Tensor")
            dtype_name(tensor.dtype)
        for key, value in self.config.items():
            _check_config_value(key, value)
        for key, metric in self.metrics.items():
            if isinstance(metric, bool) or not isinstance(metric, (int, float)):
                raise TypeError(
                    f"metrics[{key!r}] must be int or float, got {type(metric).__name__}"
                )

    def num_tensor_bytes(self) -> int:
        """Return the raw size of all tensors in bytes (not the serialized size)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def with_config(self, **extra: ConfigValue) -> Payload:
        """Return a shallow copy with ``extra`` merged into the config."""
        return Payload(dict(self.tensors), {**self.config, **extra}, dict(self.metrics))


def config_int(config: Mapping[str, ConfigValue], key: str) -> int:
    """Read an int from a task config, raising KeyError/TypeError naming the key."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"config {key!r} should be an int, got {type(value).__name__}")
    return value


def config_float(config: Mapping[str, ConfigValue], key: str) -> float:
    """Read a float (an int is accepted) from a task config."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"config {key!r} should be a number, got {type(value).__name__}")
    return float(value)
