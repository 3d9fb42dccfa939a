"""Tests for fedft.core.serde: bit-exact round trips and rejection of malformed wire input."""

from __future__ import annotations

import math
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedft.core.errors import ProtocolError
from fedft.core.payload import SUPPORTED_DTYPES, ConfigValue, Payload
from fedft.core.serde import (
    payload_from_bytes,
    payload_from_proto,
    payload_to_bytes,
    payload_to_proto,
    serialized_size,
)
from fedft.proto.v1 import payload_pb2 as pb

FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def raw_bytes(t: torch.Tensor) -> bytes:
    """The tensor's elements as bytes in C order, whatever its dtype and strides."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_bit_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    assert raw_bytes(a) == raw_bytes(b)


def roundtrip(p: Payload) -> Payload:
    data = payload_to_bytes(p)
    assert serialized_size(p) == len(data)
    return payload_from_bytes(data)


def same_value(a: object, b: object) -> bool:
    """Equality that is exact about types, NaN and the sign of zero."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def assert_payload_equal(a: Payload, b: Payload) -> None:
    assert list(a.tensors) == list(b.tensors)
    for name in a.tensors:
        assert_bit_equal(a.tensors[name], b.tensors[name])
    assert list(a.config) == list(b.config)
    assert all(same_value(a.config[k], b.config[k]) for k in a.config), (a.config, b.config)
    assert list(a.metrics) == list(b.metrics)
    assert all(same_value(a.metrics[k], b.metrics[k]) for k in a.metrics), (a.metrics, b.metrics)


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Arbitrary bit patterns (NaNs and subnormals included) for every dtype but bool."""
    gen = torch.Generator().manual_seed(seed)
    numel = math.prod(shape)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    raw = torch.randint(0, 256, (numel * dtype.itemsize,), generator=gen, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


# --- tensors -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SUPPORTED_DTYPES))
def test_every_dtype_round_trips_bit_exactly(name: str) -> None:
    dtype = SUPPORTED_DTYPES[name]
    tensor = random_tensor(dtype, (3, 5, 7), seed=len(name))
    out = roundtrip(Payload({"w": tensor}))
    assert_bit_equal(out.tensors["w"], tensor)
    if dtype != torch.bool:  # bool of random bytes is not a valid torch.bool
        assert out.tensors["w"].view(torch.uint8).numel() == tensor.numel() * dtype.itemsize


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_special_values_keep_their_bits(dtype: torch.dtype) -> None:
    info = torch.finfo(dtype)
    values = [math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, info.tiny, info.max, info.min]
    tensor = torch.tensor(values, dtype=dtype)
    tensor = torch.cat([tensor, torch.tensor([info.tiny / 4], dtype=dtype)])  # a subnormal
    out = roundtrip(Payload({"x": tensor})).tensors["x"]
    assert_bit_equal(out, tensor)
    assert math.copysign(1.0, out[4].item()) == -1.0  # negative zero stays negative


def test_nan_payload_bits_are_not_canonicalized() -> None:
    # A quiet NaN with a payload and a signalling NaN: a value conversion would rewrite them.
    bits = torch.tensor([0x7FC00001, 0x7F800001, -0x00400001], dtype=torch.int32)
    tensor = bits.view(torch.float32)
    out = roundtrip(Payload({"nan": tensor})).tensors["nan"]
    assert torch.equal(out.view(torch.int32), bits)


def test_bfloat16_values_outside_float16_range_survive() -> None:
    # float16 overflows at 65504 and flushes below ~6e-8; bf16 shares float32's exponent range.
    tensor = torch.tensor([1e30, -3e38, 1e-30, 65536.0 * 4], dtype=torch.bfloat16)
    assert torch.isinf(tensor.to(torch.float16)).any()
    out = roundtrip(Payload({"b": tensor})).tensors["b"]
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.view(torch.int16), tensor.view(torch.int16))
    assert torch.isfinite(out).all()
    assert out[2].item() != 0.0


@pytest.mark.parametrize("name", list(SUPPORTED_DTYPES))
def test_zero_dim_tensors(name: str) -> None:
    tensor = random_tensor(SUPPORTED_DTYPES[name], (), seed=7)
    out = roundtrip(Payload({"s": tensor})).tensors["s"]
    assert out.dim() == 0
    assert_bit_equal(out, tensor)


@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (0, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.bool, torch.int64])
def test_empty_tensors(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    out = roundtrip(Payload({"e": torch.empty(shape, dtype=dtype)})).tensors["e"]
    assert out.shape == shape
    assert out.dtype == dtype


def test_non_contiguous_and_odd_strided_inputs() -> None:
    base = random_tensor(torch.float32, (6, 8), seed=1)
    cases = {
        "transposed": base.T,
        "stepped": base[::2, 1::3],
        "offset": base[2:, 3:],
        "expanded": torch.arange(4, dtype=torch.int16).expand(3, 4),  # stride 0
        "bf16_t": random_tensor(torch.bfloat16, (4, 5), seed=2).T,
        "bool_t": random_tensor(torch.bool, (4, 5), seed=3).T,
        "grad": torch.ones(3, requires_grad=True) * 2,
    }
    assert not any(t.is_contiguous() for k, t in cases.items() if k not in {"offset", "grad"})
    out = roundtrip(Payload(cases))
    for name, tensor in cases.items():
        assert_bit_equal(out.tensors[name], tensor)
        assert out.tensors[name].is_contiguous()


def test_decoded_tensors_own_writable_memory() -> None:
    data = payload_to_bytes(Payload({"w": torch.zeros(4), "m": torch.zeros(2, dtype=torch.bool)}))
    out = payload_from_bytes(data)
    out.tensors["w"] += 1  # would warn or fail on a read-only buffer
    out.tensors["m"][0] = True
    assert out.tensors["w"].tolist() == [1.0] * 4
    assert payload_from_bytes(data).tensors["w"].tolist() == [0.0] * 4


# --- config and metrics ----------------------------------------------------------------------


def test_config_value_kinds_keep_their_types() -> None:
    config: dict[str, ConfigValue] = {
        "flag": True,
        "off": False,
        "one": 1,
        "one_float": 1.0,
        "neg_zero": -0.0,
        "nan": math.nan,
        "big": INT64_MAX,
        "small": INT64_MIN,
        "text": "héllo ✓",
        "empty_text": "",
        "bools": [True, False],
        "ints": [1, 0, -5],
        "floats": [1.0, 2.5, math.inf],
        "strs": ["a", ""],
        "empty": [],
    }
    out = roundtrip(Payload(config=config)).config
    assert list(out) == list(config)
    for key, value in config.items():
        assert same_value(out[key], value), (key, out[key], value)
    assert out["flag"] is True
    assert type(out["one"]) is int
    assert type(out["one_float"]) is float
    assert out["empty"] == []


def test_metrics_keep_int_and_float_apart() -> None:
    metrics: dict[str, int | float] = {"n": 3, "loss": 3.0, "acc": 0.25, "max": INT64_MAX}
    out = roundtrip(Payload(metrics=metrics)).metrics
    assert out == metrics
    assert type(out["n"]) is int
    assert type(out["loss"]) is float


def test_insertion_order_is_preserved() -> None:
    names = ["z", "a", "m", "b"]
    p = Payload(
        tensors={n: torch.zeros(1) for n in names},
        config=dict.fromkeys(reversed(names), 1),
        metrics=dict.fromkeys(names[1:] + names[:1], 1.0),
    )
    out = roundtrip(p)
    assert list(out.tensors) == list(p.tensors)
    assert list(out.config) == list(p.config)
    assert list(out.metrics) == list(p.metrics)


def test_serialization_is_deterministic_and_sized() -> None:
    p = Payload({"w": torch.randn(5, 3)}, {"lr": 0.1, "tags": ["a"]}, {"n": 2})
    assert payload_to_bytes(p) == payload_to_bytes(p)
    assert serialized_size(p) == len(payload_to_bytes(p))
    assert serialized_size(Payload()) == 0
    assert payload_from_proto(payload_to_proto(p)).config == p.config


@pytest.mark.parametrize(
    "payload",
    [
        Payload(config={"x": 2**63}),
        Payload(config={"x": [1, -(2**63) - 1]}),
        Payload(metrics={"m": 2**64}),
    ],
)
def test_out_of_range_ints_are_rejected_when_encoding(payload: Payload) -> None:
    with pytest.raises(ValueError, match="int64"):
        payload_to_bytes(payload)


def test_mutated_mixed_list_is_rejected_when_encoding() -> None:
    p = Payload(config={"x": [1, 2]})
    p.config["x"].append(True)  # type: ignore[union-attr, arg-type]
    with pytest.raises(TypeError, match="one scalar type"):
        payload_to_bytes(p)


# --- malformed input -----------------------------------------------------------------------


def valid_proto() -> pb.Payload:
    return payload_to_proto(
        Payload({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, {"k": 1}, {"m": 1.0})
    )


def corrupt(mutate: str) -> pb.Payload:
    msg = valid_proto()
    if mutate == "short_data":
        msg.tensors[0].data = msg.tensors[0].data[:-1]
    elif mutate == "long_data":
        msg.tensors[0].data += b"\0"
    elif mutate == "unknown_dtype":
        msg.tensors[0].dtype = "complex64"
    elif mutate == "empty_dtype":
        msg.tensors[0].dtype = ""
    elif mutate == "negative_dim":
        msg.tensors[0].shape[:] = [-2, -3]
    elif mutate == "wrong_shape":
        msg.tensors[0].shape[:] = [4, 3]
    elif mutate == "duplicate_tensor":
        msg.tensors.append(msg.tensors[0])
    elif mutate == "duplicate_config":
        msg.config.append(msg.config[0])
    elif mutate == "duplicate_metric":
        msg.metrics.append(msg.metrics[0])
    elif mutate == "unset_value":
        msg.config.add(key="empty")
    elif mutate == "unset_number":
        msg.metrics.add(key="empty")
    elif mutate == "bad_bool":
        msg.tensors.add(name="b", dtype="bool", shape=[2], data=b"\x01\x02")
    return msg


MUTATIONS = {
    "short_data": "needs 24",
    "long_data": "needs 24",
    "unknown_dtype": "unknown dtype 'complex64'",
    "empty_dtype": "unknown dtype",
    "negative_dim": "negative dimension",
    "wrong_shape": "needs 48",
    "duplicate_tensor": "duplicate tensor name 'w'",
    "duplicate_config": "duplicate config key 'k'",
    "duplicate_metric": "duplicate metric key 'm'",
    "unset_value": "has no value",
    "unset_number": "has no value",
    "bad_bool": "0 or 1",
}


@pytest.mark.parametrize(("mutate", "message"), MUTATIONS.items())
def test_malformed_messages_raise_protocol_error(mutate: str, message: str) -> None:
    msg = corrupt(mutate)
    with pytest.raises(ProtocolError, match=message):
        payload_from_proto(msg)
    with pytest.raises(ProtocolError, match=message):
        payload_from_bytes(msg.SerializeToString())


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xff",  # an invalid tag
        b"\x0a\x10short",  # a length prefix running past the end
        b"\x12\x05\x0a\x03\xff\xfe\xfd",  # invalid UTF-8 in a string field
    ],
)
def test_garbage_bytes_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        payload_from_bytes(data)


def test_truncated_message_raises_protocol_error() -> None:
    data = valid_proto().SerializeToString()
    with pytest.raises(ProtocolError):
        payload_from_bytes(data[: len(data) // 2])


def test_empty_bytes_are_an_empty_payload() -> None:
    assert_payload_equal(payload_from_bytes(b""), Payload())


# --- property test -------------------------------------------------------------------------

keys = st.text(max_size=6)
int64s = st.integers(INT64_MIN, INT64_MAX)
floats = st.floats(allow_nan=True, allow_infinity=True)
config_values: st.SearchStrategy[ConfigValue] = st.one_of(
    st.booleans(),
    int64s,
    floats,
    st.text(max_size=8),
    st.lists(st.booleans(), max_size=4),
    st.lists(int64s, max_size=4),
    st.lists(floats, max_size=4),
    st.lists(st.text(max_size=4), max_size=4),
)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = SUPPORTED_DTYPES[draw(st.sampled_from(sorted(SUPPORTED_DTYPES)))]
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    numel = math.prod(shape)
    if dtype == torch.bool:
        data = bytes(draw(st.lists(st.integers(0, 1), min_size=numel, max_size=numel)))
    else:
        size = numel * dtype.itemsize
        data = draw(st.binary(min_size=size, max_size=size))
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


payloads = st.builds(
    Payload,
    tensors=st.dictionaries(keys, tensors(), max_size=4),
    config=st.dictionaries(keys, config_values, max_size=6),
    metrics=st.dictionaries(keys, st.one_of(int64s, floats), max_size=4),
)


@settings(max_examples=75, deadline=None)
@given(payloads)
def test_random_payloads_round_trip(p: Payload) -> None:
    data = payload_to_bytes(p)
    assert len(data) == serialized_size(p)
    assert_payload_equal(payload_from_bytes(data), p)
    assert payload_to_bytes(payload_from_bytes(data)) == data
