"""Triton dequantize kernels for block-wise NF4 and int8 weights (layout: reference/quant.py).

Memory-bound: each program reads ``BYTES`` packed bytes once, decodes both nibbles (NF4 through
a 16-entry table that stays in L1), multiplies by the block's fp32 scale and writes the values in
order, so reads and writes are both coalesced. One rounding, to the output dtype, as in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fedft.kernels.reference.quant import nf4_table

BYTES = 1024  # NF4 bytes per program (2048 outputs)
INT8_BLOCK = 2048


@triton.jit
def _nf4_kernel(
    codes_ptr,
    scales_ptr,
    table_ptr,
    out_ptr,
    nbytes,
    BLOCKSIZE: tl.constexpr,
    BYTES: tl.constexpr,
):
    b = tl.program_id(0) * BYTES + tl.arange(0, BYTES)
    mask = b < nbytes
    byte = tl.load(codes_ptr + b, mask=mask, other=0).to(tl.int32)
    # Both nibbles of a byte lie in the same block: the block size is even.
    scale = tl.load(scales_ptr + (2 * b) // BLOCKSIZE, mask=mask, other=0.0)
    high = tl.load(table_ptr + (byte >> 4)) * scale
    low = tl.load(table_ptr + (byte & 0xF)) * scale
    values = tl.interleave(high, low).to(out_ptr.dtype.element_ty)
    o = tl.program_id(0) * (2 * BYTES) + tl.arange(0, 2 * BYTES)
    tl.store(out_ptr + o, values, mask=o < 2 * nbytes)


@triton.jit
def _int8_kernel(codes_ptr, scales_ptr, out_ptr, n, BLOCKSIZE: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    q = tl.load(codes_ptr + i, mask=mask, other=0).to(tl.float32)
    scale = tl.load(scales_ptr + i // BLOCKSIZE, mask=mask, other=0.0)
    tl.store(out_ptr + i, (q * scale).to(out_ptr.dtype.element_ty), mask=mask)


_tables: dict[torch.device, torch.Tensor] = {}


def _table(device: torch.device) -> torch.Tensor:
    if device not in _tables:
        _tables[device] = nf4_table(device)
    return _tables[device]


def dequantize(
    scheme: str,
    codes: torch.Tensor,
    scales: torch.Tensor,
    numel: int,
    *,
    blocksize: int,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the first ``numel`` dequantized values (flat) in ``dtype``; ``out`` is reused."""
    padded = scales.numel() * blocksize
    if out is None or out.numel() < padded or out.dtype != dtype:
        out = torch.empty(padded, dtype=dtype, device=codes.device)
    if scheme == "nf4":
        nbytes = codes.numel()
        _nf4_kernel[(triton.cdiv(nbytes, BYTES),)](
            codes, scales, _table(codes.device), out, nbytes, BLOCKSIZE=blocksize, BYTES=BYTES
        )
    elif scheme == "int8":
        _int8_kernel[(triton.cdiv(padded, INT8_BLOCK),)](
            codes, scales, out, padded, BLOCKSIZE=blocksize, BLOCK=INT8_BLOCK
        )
    else:
        raise ValueError(f"unknown quantization scheme {scheme!r}")
    return out[:numel]
