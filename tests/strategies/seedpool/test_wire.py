"""Tests for the coefficient-delta wire encoding: dense fp32 or sparse (index, value) pairs."""

from __future__ import annotations

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.strategies.seedpool.wire import decode_delta, encode_delta, index_dtype


def sparse_delta(numel: int, nonzero: list[int]) -> torch.Tensor:
    delta = torch.zeros(numel, dtype=torch.float64)
    delta[nonzero] = torch.linspace(-1.0, 1.0, len(nonzero), dtype=torch.float64) / 3 + 1e-3
    return delta


def roundtrip(encoded: dict[str, torch.Tensor], numel: int) -> torch.Tensor:
    # Through the real serializer, as the delta travels.
    return decode_delta(payload_from_bytes(payload_to_bytes(Payload(tensors=encoded))), numel)


def test_index_dtype_is_int16_while_every_index_fits() -> None:
    assert index_dtype(1) == torch.int16
    assert index_dtype(2**15) == torch.int16  # largest index 32767 is int16's max
    assert index_dtype(2**15 + 1) == torch.int32
    assert index_dtype(10**8) == torch.int32


def test_few_nonzeros_are_sent_sparse_with_int16_indices() -> None:
    delta = sparse_delta(100, [3, 50, 99])
    encoded = encode_delta(delta)
    assert set(encoded) == {"di", "dv"}
    assert encoded["di"].dtype == torch.int16
    assert encoded["dv"].dtype == torch.float32
    assert encoded["di"].tolist() == [3, 50, 99]
    assert torch.equal(roundtrip(encoded, 100), delta.to(torch.float32).to(torch.float64))


def test_many_nonzeros_are_sent_dense() -> None:
    delta = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    encoded = encode_delta(delta, prefix="x")
    assert set(encoded) == {"x"}
    assert encoded["x"].dtype == torch.float32
    got = decode_delta(Payload(tensors=encoded), 100, prefix="x")
    assert got.dtype == torch.float64
    assert torch.equal(got, delta.to(torch.float32).to(torch.float64))


def test_sparse_is_chosen_exactly_when_it_is_smaller() -> None:
    # int16 entries cost 6 bytes against 4 per dense entry: sparse iff 6 * nnz < 4 * numel.
    numel = 30
    assert set(encode_delta(sparse_delta(numel, list(range(19))))) == {"di", "dv"}  # 114 < 120
    assert set(encode_delta(sparse_delta(numel, list(range(20))))) == {"d"}  # 120 == 120
    # int32 entries cost 8 bytes: sparse iff nnz < numel / 2.
    numel = 2**15 + 2
    nearly_half = sparse_delta(numel, list(range(0, numel, 2))[:-1])
    encoded = encode_delta(nearly_half)
    assert encoded["di"].dtype == torch.int32
    assert set(encode_delta(sparse_delta(numel, list(range(0, numel, 2))))) == {"d"}


@pytest.mark.parametrize("numel", [2**15, 2**15 + 1])
def test_indices_at_the_int16_boundary_roundtrip(numel: int) -> None:
    delta = sparse_delta(numel, [0, 1234, numel - 1])
    encoded = encode_delta(delta)
    assert encoded["di"].dtype == index_dtype(numel)
    assert int(encoded["di"].to(torch.int64).max()) == numel - 1  # no int16 wrap-around
    assert torch.equal(roundtrip(encoded, numel), delta.to(torch.float32).to(torch.float64))


def test_zero_delta_encodes_to_nothing_and_empty_payload_decodes_to_zeros() -> None:
    encoded = encode_delta(torch.zeros(7, dtype=torch.float64))
    assert all(t.numel() == 0 for t in encoded.values())
    assert torch.equal(roundtrip(encoded, 7), torch.zeros(7, dtype=torch.float64))
    got = decode_delta(Payload(), 5)
    assert got.dtype == torch.float64
    assert torch.equal(got, torch.zeros(5, dtype=torch.float64))


def test_matrix_delta_is_flattened_row_major() -> None:
    delta = torch.zeros(4, 3, dtype=torch.float64)
    delta[2, 1] = 0.5
    encoded = encode_delta(delta)
    assert encoded["di"].tolist() == [7]
    assert torch.equal(decode_delta(Payload(tensors=encoded), 12).reshape(4, 3), delta)


def test_values_are_rounded_to_fp32_once() -> None:
    delta = torch.tensor([0.1, 0.0, 1e-50, 0.0, 0.0, 0.0], dtype=torch.float64)
    got = roundtrip(encode_delta(delta), 6)
    assert torch.equal(got, delta.to(torch.float32).to(torch.float64))
    assert float(got[0]) == float(torch.tensor(0.1, dtype=torch.float32))


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ({"d": torch.zeros(5, dtype=torch.float64)}, "float32"),
        ({"d": torch.zeros(4)}, "shape"),
        ({"d": torch.zeros(5, 1)}, "shape"),
        ({"di": torch.tensor([1], dtype=torch.int16)}, "both"),
        ({"dv": torch.tensor([1.0])}, "both"),
        ({"di": torch.tensor([1]), "dv": torch.tensor([1.0])}, "int16/int32"),
        ({"di": torch.tensor([[1]], dtype=torch.int16), "dv": torch.tensor([[1.0]])}, "1-d"),
        ({"di": torch.tensor([1], dtype=torch.int16), "dv": torch.tensor([1.0]).double()}, "float"),
        ({"di": torch.tensor([1, 2], dtype=torch.int16), "dv": torch.tensor([1.0])}, "one per"),
        ({"di": torch.tensor([5], dtype=torch.int16), "dv": torch.tensor([1.0])}, "outside"),
        ({"di": torch.tensor([-1], dtype=torch.int16), "dv": torch.tensor([1.0])}, "outside"),
        ({"di": torch.tensor([0, 70000], dtype=torch.int32), "dv": torch.ones(2)}, "outside"),
    ],
)
def test_decode_rejects_malformed_deltas(tensors: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_delta(Payload(tensors=tensors), 5)


def test_decode_ignores_other_prefixes() -> None:
    payload = Payload(
        tensors={"p": torch.ones(3, dtype=torch.uint8), **encode_delta(torch.ones(5))}
    )
    assert torch.equal(decode_delta(payload, 5), torch.ones(5, dtype=torch.float64))
    assert torch.equal(decode_delta(payload, 5, prefix="q"), torch.zeros(5, dtype=torch.float64))
