"""Encode a Payload as the wire message fedft.proto.v1.Payload and decode it back, bit-exactly."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from google.protobuf.message import DecodeError

from fedft.core.errors import ProtocolError
from fedft.core.payload import SUPPORTED_DTYPES, ConfigValue, MetricValue, Payload, dtype_name

# This is the one core module allowed to see generated code (tests/test_layering.py enforces
# it), so the wire format can change without touching strategies or hosts.
from fedft.proto.v1 import payload_pb2 as pb

# Tensor bytes go on the wire in the host's byte order, which the protocol fixes as little-endian.
# Big-endian hosts are out of scope: they would need a byteswap in both directions here.

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _int64(where: str, value: int) -> int:
    # Python ints are unbounded; say which entry overflows rather than protobuf's bare ValueError.
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{where}: {value} does not fit the wire format's int64")
    return value


def _tensor_to_proto(name: str, tensor: torch.Tensor) -> pb.Tensor:
    if tensor.layout != torch.strided:
        raise ValueError(f"tensors[{name!r}]: only dense tensors can be sent, not {tensor.layout}")
    return pb.Tensor(
        name=name, dtype=dtype_name(tensor.dtype), shape=tensor.shape, data=tensor_bytes(tensor)
    )


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's elements as contiguous little-endian bytes, no value converted."""
    # Flattening first lets every dtype (bf16 and bool included, which numpy lacks or stores
    # differently) be viewed as raw bytes, so no value is ever converted on the way out.
    flat = tensor.detach().contiguous().cpu().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _tensor_from_proto(msg: pb.Tensor) -> torch.Tensor:
    # Read the field once: every access copies the bytes out of the protobuf message.
    return tensor_from_bytes(f"tensor {msg.name!r}", msg.dtype, list(msg.shape), msg.data)


def tensor_from_bytes(where: str, dtype: str, shape: Sequence[int], data: bytes) -> torch.Tensor:
    """Rebuild a tensor from :func:`tensor_bytes` output, checking dtype, shape and byte count.

    ``where`` names the tensor in the :class:`ProtocolError` raised for anything malformed.
    """
    torch_dtype = SUPPORTED_DTYPES.get(dtype)
    if torch_dtype is None:
        raise ProtocolError(f"{where}: unknown dtype {dtype!r}")
    shape = list(shape)
    if any(dim < 0 for dim in shape):
        raise ProtocolError(f"{where}: negative dimension in shape {shape}")
    # Python ints cannot overflow, so a hostile shape cannot wrap around to match the data.
    expected = math.prod(shape) * torch_dtype.itemsize
    if len(data) != expected:
        raise ProtocolError(
            f"{where}: has {len(data)} bytes but {dtype} of shape {shape} needs {expected}"
        )
    if expected == 0:
        return torch.empty(shape, dtype=torch_dtype)  # frombuffer rejects empty buffers
    # Our one copy: a bytearray is writable memory the tensor owns and keeps alive, unlike the
    # immutable bytes (frombuffer would warn and later in-place updates would be unsafe).
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if torch_dtype == torch.bool and bool((raw > 1).any()):
        # Any other byte would be a bool tensor with undefined behaviour in torch kernels.
        raise ProtocolError(f"{where}: bool elements must be bytes 0 or 1")
    return raw.view(torch_dtype).reshape(shape)


def _value_to_proto(key: str, value: ConfigValue) -> pb.Value:
    where = f"config[{key!r}]"
    msg = pb.Value()
    # bool before int: bool is a subclass of int, and True must not arrive as 1.
    if isinstance(value, bool):
        msg.bool_value = value
    elif isinstance(value, int):
        msg.int_value = _int64(where, value)
    elif isinstance(value, float):
        msg.float_value = value
    elif isinstance(value, str):
        msg.string_value = value
    elif isinstance(value, list):
        _list_to_proto(where, value, msg)
    else:
        raise TypeError(f"{where}: unsupported value type {type(value).__name__}")
    return msg


def _list_to_proto(
    where: str, value: list[bool] | list[int] | list[float] | list[str], msg: pb.Value
) -> None:
    # An empty list has no element type; it goes as a string list and decodes to [] anyway.
    kind = type(value[0]) if value else str
    if any(type(v) is not kind for v in value):
        raise TypeError(f"{where}: a list must hold one scalar type")
    # SetInParent marks the oneof case even for an empty list, which extend([]) would not.
    # The bool()/int()/... calls are identities after the check above; they only inform mypy.
    if kind is bool:
        msg.bool_list.SetInParent()
        msg.bool_list.values.extend(bool(v) for v in value)
    elif kind is int:
        msg.int_list.SetInParent()
        msg.int_list.values.extend(_int64(where, int(v)) for v in value)
    elif kind is float:
        msg.float_list.SetInParent()
        msg.float_list.values.extend(float(v) for v in value)
    elif kind is str:
        msg.string_list.SetInParent()
        msg.string_list.values.extend(str(v) for v in value)
    else:
        raise TypeError(f"{where}: unsupported list element type {kind.__name__}")


def _value_from_proto(key: str, msg: pb.Value) -> ConfigValue:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise ProtocolError(f"config[{key!r}] has no value")
    field = getattr(msg, kind)  # the oneof case names are exactly the field names
    if kind.endswith("_list"):
        return list(field.values)
    value: ConfigValue = field
    return value


def _number_to_proto(key: str, value: MetricValue) -> pb.Number:
    # Checked here too because a Payload's dicts can be mutated after it was validated.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"metrics[{key!r}] must be int or float, got {type(value).__name__}")
    if isinstance(value, int):
        return pb.Number(int_value=_int64(f"metrics[{key!r}]", value))
    return pb.Number(float_value=value)


def _number_from_proto(key: str, msg: pb.Number) -> MetricValue:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise ProtocolError(f"metrics[{key!r}] has no value")
    return msg.int_value if kind == "int_value" else msg.float_value


def config_to_proto(config: Mapping[str, ConfigValue]) -> list[pb.ValueEntry]:
    """Encode a flat config (a Payload's, a strategy's, a run's) as wire entries."""
    return [pb.ValueEntry(key=k, value=_value_to_proto(k, v)) for k, v in config.items()]


def config_from_proto(entries: Iterable[pb.ValueEntry]) -> dict[str, ConfigValue]:
    """Decode wire config entries; raise ProtocolError on duplicates or empty values."""
    config: dict[str, ConfigValue] = {}
    for c in entries:
        # Repeated entries, unlike a dict, can repeat a key; last-wins would hide a peer's bug.
        if c.key in config:
            raise ProtocolError(f"duplicate config key {c.key!r}")
        config[c.key] = _value_from_proto(c.key, c.value)
    return config


def metrics_to_proto(metrics: Mapping[str, MetricValue]) -> list[pb.NumberEntry]:
    """Encode metrics (or any name -> number map) as wire entries."""
    return [pb.NumberEntry(key=k, value=_number_to_proto(k, v)) for k, v in metrics.items()]


def metrics_from_proto(entries: Iterable[pb.NumberEntry]) -> dict[str, MetricValue]:
    """Decode wire number entries; raise ProtocolError on duplicates or empty values."""
    metrics: dict[str, MetricValue] = {}
    for m in entries:
        if m.key in metrics:
            raise ProtocolError(f"duplicate metric key {m.key!r}")
        metrics[m.key] = _number_from_proto(m.key, m.value)
    return metrics


def payload_to_proto(payload: Payload) -> pb.Payload:
    """Build the wire message for ``payload``; raise ValueError/TypeError if it cannot be sent."""
    return pb.Payload(
        tensors=[_tensor_to_proto(n, t) for n, t in payload.tensors.items()],
        config=config_to_proto(payload.config),
        metrics=metrics_to_proto(payload.metrics),
    )


def payload_from_proto(msg: pb.Payload) -> Payload:
    """Rebuild a Payload from its wire message; raise ProtocolError if the message is malformed."""
    tensors: dict[str, torch.Tensor] = {}
    for t in msg.tensors:
        if t.name in tensors:
            raise ProtocolError(f"duplicate tensor name {t.name!r}")
        tensors[t.name] = _tensor_from_proto(t)
    return Payload(tensors, config_from_proto(msg.config), metrics_from_proto(msg.metrics))


def payload_to_bytes(payload: Payload) -> bytes:
    """Serialize ``payload`` to wire bytes; equal payloads always give equal bytes."""
    return payload_to_proto(payload).SerializeToString(deterministic=True)


def payload_from_bytes(data: bytes) -> Payload:
    """Parse wire bytes into a Payload; raise ProtocolError on anything malformed."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"malformed payload message: {exc}") from exc
    return payload_from_proto(msg)


def serialized_size(payload: Payload) -> int:
    """Return the number of bytes ``payload_to_bytes(payload)`` produces, for traffic accounting."""
    return payload_to_proto(payload).ByteSize()
