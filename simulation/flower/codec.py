"""Translate fedft Payloads to Flower RecordDicts and back, keeping every dtype (bf16 included).

A Payload maps onto three records of one RecordDict: its tensors onto an ArrayRecord, its config
onto a ConfigRecord, its metrics onto a MetricRecord. Tensors numpy can hold travel as Flower's
own ``numpy.ndarray`` Arrays, so Flower's mods and strategies can read them. numpy has no bf16,
and Flower's ``Array(tensor)`` raises on one, so a bf16 tensor travels as its raw little-endian
bytes under our own ``stype``; decoding checks the byte count against dtype and shape.
"""

from __future__ import annotations

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedft.core.errors import ProtocolError
from fedft.core.payload import SUPPORTED_DTYPES, ConfigValue, MetricValue, Payload, dtype_name
from fedft.core.serde import tensor_bytes, tensor_from_bytes

NUMPY_STYPE = "numpy.ndarray"  # Flower's own serialization (np.save without pickle)
RAW_STYPE = "fedft.raw"  # contiguous little-endian element bytes, for dtypes numpy lacks
# numpy cannot represent these, so they always go raw.
_RAW_DTYPES = frozenset({torch.bfloat16})

TENSORS, CONFIG, METRICS = "tensors", "config", "metrics"


def tensor_to_array(name: str, tensor: torch.Tensor) -> Array:
    """Encode one dense tensor as a Flower Array without converting any value."""
    if tensor.layout != torch.strided:
        raise ValueError(f"tensors[{name!r}]: only dense tensors can be sent, not {tensor.layout}")
    wire_dtype = dtype_name(tensor.dtype)
    if tensor.dtype in _RAW_DTYPES:
        data = tensor_bytes(tensor)
        return Array(dtype=wire_dtype, shape=tuple(tensor.shape), stype=RAW_STYPE, data=data)
    return Array(tensor.detach().contiguous().cpu().numpy())


def array_to_tensor(name: str, array: Array) -> torch.Tensor:
    """Decode an Array written by :func:`tensor_to_array` (or by Flower from a numpy array)."""
    where = f"array {name!r}"
    if array.stype == NUMPY_STYPE:
        values = array.numpy()
        dtype = SUPPORTED_DTYPES.get(str(values.dtype))
        if dtype is None:
            raise ProtocolError(f"{where}: unsupported dtype {values.dtype}")
        # np.load returns an array we own; copy anyway when it is read-only, because strategies
        # update received tensors in place.
        return torch.from_numpy(values if values.flags.writeable else values.copy())
    if array.stype != RAW_STYPE:
        raise ProtocolError(f"{where}: unknown serialization {array.stype!r}")
    return tensor_from_bytes(where, array.dtype, array.shape, array.data)


def tensors_to_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    """Encode named tensors as one ArrayRecord (what Flower calls a model's arrays)."""
    return ArrayRecord({name: tensor_to_array(name, t) for name, t in tensors.items()})


def payload_to_records(payload: Payload, prefix: str = "") -> RecordDict:
    """Encode a Payload as a RecordDict with three records named ``PREFIX{tensors,config,...}``."""
    records = RecordDict()
    records[prefix + TENSORS] = tensors_to_record(payload.tensors)
    records[prefix + CONFIG] = ConfigRecord(dict(payload.config))
    records[prefix + METRICS] = MetricRecord(dict(payload.metrics))
    return records


def store_payload(records: RecordDict, payload: Payload, prefix: str) -> None:
    """Write ``payload`` into an existing RecordDict (e.g. a Flower ``Context.state``)."""
    for key, record in payload_to_records(payload, prefix).items():
        records[key] = record


def records_to_payload(records: RecordDict, prefix: str = "") -> Payload:
    """Decode what :func:`payload_to_records` wrote; missing records read as empty."""
    arrays = records.array_records.get(prefix + TENSORS, ArrayRecord())
    config = records.config_records.get(prefix + CONFIG, ConfigRecord())
    metrics = records.metric_records.get(prefix + METRICS, MetricRecord())
    try:
        return Payload(
            tensors={name: array_to_tensor(name, array) for name, array in arrays.items()},
            config={key: _config_value(value) for key, value in config.items()},
            metrics={key: _metric_value(key, value) for key, value in metrics.items()},
        )
    except TypeError as exc:  # Payload's own validation: a value no fedft payload can hold
        raise ProtocolError(str(exc)) from exc


def _config_value(value: object) -> ConfigValue:
    if isinstance(value, bytes):
        raise TypeError("bytes config values have no fedft equivalent")
    if isinstance(value, list):
        return list(value)
    return value  # type: ignore[return-value]  # Payload checks the type


def _metric_value(key: str, value: object) -> MetricValue:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise TypeError(f"metrics[{key!r}] must be int or float, got {type(value).__name__}")
