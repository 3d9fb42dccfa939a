"""Payload <-> Flower RecordDict: every dtype survives bit for bit, also over Flower's wire form."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedft.core.errors import ProtocolError
from fedft.core.payload import SUPPORTED_DTYPES, Payload
from fedft.simulation.flower.codec import (
    NUMPY_STYPE,
    RAW_STYPE,
    array_to_tensor,
    payload_to_records,
    records_to_payload,
    store_payload,
    tensor_to_array,
)


def raw_bytes(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def sample(dtype: torch.dtype, shape: tuple[int, ...] = (3, 5)) -> torch.Tensor:
    """Values that exercise the dtype: negatives, fractions, extremes, NaN for floats."""
    gen = torch.Generator().manual_seed(7)
    if dtype == torch.bool:
        return torch.rand(shape, generator=gen) > 0.5
    if dtype.is_floating_point:
        t = (torch.randn(shape, generator=gen, dtype=torch.float64) * 1e3).to(dtype)
        specials = [float("nan"), -0.0, torch.finfo(dtype).max]
        flat = t.view(-1)
        flat[: len(specials)] = torch.tensor(specials[: flat.numel()], dtype=dtype)
        return t
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)


def over_flower_wire(records: RecordDict) -> RecordDict:
    """Deflate into Flower's content-addressed objects and inflate back, as a transfer does."""
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(records).items()}
    inflated = inflate_object_from_contents(records.object_id, contents)
    assert isinstance(inflated, RecordDict)
    return inflated


@pytest.mark.parametrize("name", sorted(SUPPORTED_DTYPES))
@pytest.mark.parametrize("shape", [(3, 5), (0, 4), ()])
def test_every_dtype_round_trips_bit_exactly_over_the_wire(
    name: str, shape: tuple[int, ...]
) -> None:
    tensor = sample(SUPPORTED_DTYPES[name], shape)
    records = over_flower_wire(payload_to_records(Payload(tensors={"w": tensor})))
    back = records_to_payload(records).tensors["w"]
    assert back.dtype == tensor.dtype
    assert back.shape == tensor.shape
    assert raw_bytes(back) == raw_bytes(tensor)


def test_bf16_travels_raw_and_the_rest_as_flower_numpy_arrays() -> None:
    bf16 = tensor_to_array("a", sample(torch.bfloat16))
    assert (bf16.stype, bf16.dtype, bf16.shape) == (RAW_STYPE, "bfloat16", (3, 5))
    fp32 = tensor_to_array("b", sample(torch.float32))
    assert fp32.stype == NUMPY_STYPE
    # Flower's own tools read the numpy-typed arrays unchanged.
    assert raw_bytes(torch.from_numpy(fp32.numpy())) == raw_bytes(sample(torch.float32))


def test_non_contiguous_tensor_is_sent_in_logical_order() -> None:
    base = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    back = array_to_tensor("t", tensor_to_array("t", base.t()))
    assert torch.equal(back, base.t())


def test_received_tensors_are_writable_and_own_their_memory() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        records = payload_to_records(Payload(tensors={"w": torch.zeros(4, dtype=dtype)}))
        back = records_to_payload(records).tensors["w"]
        back += 1  # strategies update received tensors in place
        assert back.tolist() == [1.0] * 4


def test_config_and_metrics_keep_their_types() -> None:
    payload = Payload(
        config={
            "flag": True,
            "count": 2**62,
            "lr": 5e-4,
            "name": "fedkseed",
            "floats": [1.5, -0.0],
            "ints": [1, -2],
            "bools": [False, True],
            "names": ["q_proj", "v_proj"],
            "empty": [],
        },
        metrics={"loss": 0.25, "examples": 17},
    )
    back = records_to_payload(over_flower_wire(payload_to_records(payload)))
    assert back.config == payload.config
    for key, value in payload.config.items():
        assert type(back.config[key]) is type(value), key
    assert back.metrics == payload.metrics
    assert type(back.metrics["examples"]) is int


def test_prefixed_payload_lives_beside_other_records() -> None:
    """The client keeps its local state in Flower's Context.state next to anything else."""
    state = RecordDict({"user": ConfigRecord({"keep": 1})})
    local = Payload(tensors={"base": torch.ones(2)}, config={"version": 3})
    store_payload(state, local, "fedft.local.")
    assert state.config_records["user"]["keep"] == 1
    back = records_to_payload(state, "fedft.local.")
    assert back.config == {"version": 3}
    assert torch.equal(back.tensors["base"], torch.ones(2))
    assert records_to_payload(RecordDict(), "fedft.local.") == Payload()


def test_malformed_arrays_are_protocol_errors() -> None:
    short = Array(dtype="bfloat16", shape=(4,), stype=RAW_STYPE, data=b"\x00" * 6)
    with pytest.raises(ProtocolError, match="has 6 bytes but bfloat16"):
        array_to_tensor("w", short)
    unknown = Array(dtype="bfloat16", shape=(1,), stype="pickle", data=b"\x00\x00")
    with pytest.raises(ProtocolError, match="unknown serialization"):
        array_to_tensor("w", unknown)
    bad_dtype = Array(dtype="complex64", shape=(1,), stype=RAW_STYPE, data=b"\x00" * 8)
    with pytest.raises(ProtocolError, match="unknown dtype"):
        array_to_tensor("w", bad_dtype)
    # Raw bytes get the wire format's checks: a bool must be byte 0 or 1.
    bad_bool = Array(dtype="bool", shape=(2,), stype=RAW_STYPE, data=b"\x01\x02")
    with pytest.raises(ProtocolError, match="bool elements must be bytes 0 or 1"):
        array_to_tensor("w", bad_bool)
    import numpy as np

    complex_numpy = Array(np.zeros(2, dtype=np.complex64))
    with pytest.raises(ProtocolError, match="unsupported dtype complex64"):
        array_to_tensor("w", complex_numpy)


def test_values_no_payload_can_hold_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="bytes"):
        records_to_payload(RecordDict({"config": ConfigRecord({"blob": b"\x00"})}))
    with pytest.raises(ProtocolError, match="metrics"):
        records_to_payload(RecordDict({"metrics": MetricRecord({"curve": [0.1, 0.2]})}))
    # An ArrayRecord Flower built itself (from numpy) is accepted like ours.
    flower_made = RecordDict({"tensors": ArrayRecord({"w": Array(sample(torch.float16).numpy())})})
    assert records_to_payload(flower_made).tensors["w"].dtype == torch.float16
