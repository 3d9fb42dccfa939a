"""Tests for fedft.core.payload: validation of tensors, config and metrics, and helpers."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedft.core.payload import (
    DTYPE_NAMES,
    SUPPORTED_DTYPES,
    Payload,
    config_float,
    config_int,
    dtype_name,
)


def test_empty_payload() -> None:
    p = Payload()
    assert p.tensors == {}
    assert p.config == {}
    assert p.metrics == {}
    assert p.num_tensor_bytes() == 0


@pytest.mark.parametrize("name", sorted(SUPPORTED_DTYPES))
def test_every_supported_dtype_is_accepted(name: str) -> None:
    dtype = SUPPORTED_DTYPES[name]
    p = Payload(tensors={"t": torch.zeros(2, 3, dtype=dtype)})
    assert dtype_name(p.tensors["t"].dtype) == name
    assert DTYPE_NAMES[dtype] == name


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.uint16])
def test_unsupported_dtype_is_rejected(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match="unsupported tensor dtype"):
        Payload(tensors={"t": torch.zeros(2, dtype=dtype)})
    with pytest.raises(ValueError, match="unsupported tensor dtype"):
        dtype_name(dtype)


@pytest.mark.parametrize("value", [[1.0, 2.0], 3.0, None, "tensor"])
def test_non_tensor_is_rejected(value: Any) -> None:
    with pytest.raises(TypeError, match=r"tensors\['w'\] is .*not a torch.Tensor"):
        Payload(tensors={"w": value})


@pytest.mark.parametrize(
    "value", [True, 3, -1.5, "text", [], [1, 2], [0.5], [True, False], ["a", "b"]]
)
def test_config_values_accepted(value: Any) -> None:
    assert Payload(config={"k": value}).config["k"] == value


@pytest.mark.parametrize("value", [[1, 2.0], [1, "a"], [True, 1], [[1], [2]], [None]])
def test_mixed_or_nested_lists_are_rejected(value: Any) -> None:
    with pytest.raises(TypeError, match=r"config\['k'\]"):
        Payload(config={"k": value})


@pytest.mark.parametrize("value", [None, (1, 2), {"a": 1}, b"bytes", torch.tensor(1)])
def test_unsupported_config_values_are_rejected(value: Any) -> None:
    with pytest.raises(TypeError, match="unsupported value type"):
        Payload(config={"k": value})


@pytest.mark.parametrize("value", [0, 7, 0.25, float("nan")])
def test_metrics_accept_numbers(value: float) -> None:
    assert Payload(metrics={"m": value}).metrics["m"] is value


@pytest.mark.parametrize("value", [True, False, "1", None, [1.0], torch.tensor(1.0)])
def test_metrics_reject_bools_and_non_numbers(value: Any) -> None:
    with pytest.raises(TypeError, match=r"metrics\['m'\] must be int or float"):
        Payload(metrics={"m": value})


def test_with_config_merges_without_touching_the_original() -> None:
    weights = torch.ones(3)
    original = Payload(tensors={"w": weights}, config={"a": 1, "b": "x"}, metrics={"loss": 0.5})
    copy = original.with_config(b="y", c=[1, 2])
    assert copy.config == {"a": 1, "b": "y", "c": [1, 2]}
    assert original.config == {"a": 1, "b": "x"}
    assert copy.metrics == {"loss": 0.5}
    # Shallow: the same tensor objects, but independent dicts.
    assert copy.tensors["w"] is weights
    copy.tensors["extra"] = torch.zeros(1)
    copy.metrics["n"] = 1
    assert set(original.tensors) == {"w"}
    assert original.metrics == {"loss": 0.5}


def test_with_config_validates_new_values() -> None:
    with pytest.raises(TypeError, match="unsupported value type"):
        Payload().with_config(bad=None)  # type: ignore[arg-type]


def test_num_tensor_bytes() -> None:
    p = Payload(
        tensors={
            "a": torch.zeros(10, 4, dtype=torch.float32),
            "b": torch.zeros(3, dtype=torch.bfloat16),
            "c": torch.zeros(2, 2, dtype=torch.int64),
            "d": torch.zeros(5, dtype=torch.bool),
            "e": torch.zeros(0, 7, dtype=torch.float64),
        }
    )
    assert p.num_tensor_bytes() == 160 + 6 + 32 + 5 + 0
    # Views count their own elements, not the storage they share.
    big = torch.zeros(100, dtype=torch.float16)
    assert Payload(tensors={"v": big[:10]}).num_tensor_bytes() == 20


def test_config_int() -> None:
    config: dict[str, Any] = {"n": 4, "f": 4.0, "b": True, "s": "4"}
    assert config_int(config, "n") == 4
    for key in ("f", "b", "s"):
        with pytest.raises(TypeError, match=f"config '{key}' should be an int"):
            config_int(config, key)
    with pytest.raises(KeyError, match="missing"):
        config_int(config, "missing")


def test_config_float() -> None:
    config: dict[str, Any] = {"n": 4, "f": 0.5, "b": False, "s": "0.5", "l": [1.0]}
    assert config_float(config, "f") == 0.5
    value = config_float(config, "n")
    assert value == 4.0
    assert type(value) is float
    for key in ("b", "s", "l"):
        with pytest.raises(TypeError, match=f"config '{key}' should be a number"):
            config_float(config, key)
    with pytest.raises(KeyError, match="missing"):
        config_float(config, "missing")
