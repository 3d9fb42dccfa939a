"""Compact encodings of coefficient deltas for the wire: dense fp32 or sparse (index, value)."""

from __future__ import annotations

import torch

from fedft.core.payload import Payload

# int16 indices halve a sparse entry's index cost whenever every index fits.
_INT16_LIMIT = 1 << 15


def index_dtype(size: int) -> torch.dtype:
    """Return the smallest signed integer dtype that can index ``size`` entries."""
    return torch.int16 if size <= _INT16_LIMIT else torch.int32


def encode_delta(delta: torch.Tensor, prefix: str = "d") -> dict[str, torch.Tensor]:
    """Encode a flat float64 delta as whichever is smaller: dense fp32, or sparse non-zeros."""
    flat = delta.reshape(-1)
    nonzero = flat.nonzero().reshape(-1)
    itype = index_dtype(flat.numel())
    sparse_bytes = nonzero.numel() * (torch.empty(0, dtype=itype).element_size() + 4)
    if sparse_bytes < flat.numel() * 4:
        return {
            f"{prefix}i": nonzero.to(itype),
            f"{prefix}v": flat[nonzero].to(torch.float32),
        }
    return {prefix: flat.to(torch.float32)}


def decode_delta(payload: Payload, numel: int, prefix: str = "d") -> torch.Tensor:
    """Decode :func:`encode_delta` output into a flat float64 tensor of ``numel`` entries."""
    tensors = payload.tensors
    if prefix in tensors:
        dense = tensors[prefix]
        if dense.dtype != torch.float32 or dense.shape != (numel,):
            raise ValueError(f"dense delta must be float32 of shape ({numel},)")
        return dense.to(torch.float64)
    index, values = tensors.get(f"{prefix}i"), tensors.get(f"{prefix}v")
    out = torch.zeros(numel, dtype=torch.float64)
    if index is None and values is None:
        return out
    if index is None or values is None:
        raise ValueError("a sparse delta needs both its indices and its values")
    if index.dtype not in (torch.int16, torch.int32) or index.dim() != 1:
        raise ValueError("sparse delta indices must be a 1-d int16/int32 tensor")
    if values.dtype != torch.float32 or values.shape != index.shape:
        raise ValueError("sparse delta values must be float32, one per index")
    idx = index.to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise ValueError(f"sparse delta index outside [0, {numel})")
    out[idx] = values.to(torch.float64)
    return out
