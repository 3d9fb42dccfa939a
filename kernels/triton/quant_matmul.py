"""Fused dequantize + matmul for small token counts: ``y = x @ deq(W)^T`` without a W buffer.

Each program computes a ``BM x BN`` tile of y, decoding the matching ``BK x BN`` slice of the
quantized weight in registers (NF4 table lookup or int8, times the block scale) and feeding it
to ``tl.dot`` in the activations' dtype with fp32 accumulation. For large token counts the split
path (dequantize kernel + cuBLAS) wins; this one only pays off when the GEMM is memory-bound,
so ``QuantLinear`` uses it only below a token threshold set from measured numbers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fedft.kernels.triton.quant import _table

BM, BN, BK = 16, 64, 64


@triton.jit(do_not_specialize=["m", "n", "k"])
def _matmul_kernel(
    x_ptr,
    codes_ptr,
    scales_ptr,
    table_ptr,
    y_ptr,
    m,
    n,
    k,
    NF4: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCKSIZE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    k0 = 0
    while k0 < k:  # not range(): Triton 3.6's interpreter cannot range() a runtime scalar
        rk = k0 + tl.arange(0, BK)
        x_mask = (rm < m)[:, None] & (rk < k)[None, :]
        x = tl.load(x_ptr + rm[:, None] * k + rk[None, :], mask=x_mask, other=0.0)
        # Flat (row-major) index of W[n, k] for the (BK, BN) slice: W^T's tile.
        idx = rn[None, :] * k + rk[:, None]
        w_mask = (rk < k)[:, None] & (rn < n)[None, :]
        scale = tl.load(scales_ptr + idx // BLOCKSIZE, mask=w_mask, other=0.0)
        if NF4:
            byte = tl.load(codes_ptr + idx // 2, mask=w_mask, other=0).to(tl.int32)
            nibble = tl.where(idx % 2 == 0, byte >> 4, byte & 0xF)
            value = tl.load(table_ptr + nibble)
        else:
            value = tl.load(codes_ptr + idx, mask=w_mask, other=0).to(tl.float32)
        w = (value * scale).to(x_ptr.dtype.element_ty)
        if IEEE:  # noqa: SIM108 - a statement-level constexpr branch compiles on every Triton
            acc = tl.dot(x, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(x, w, acc)
        k0 += BK
    y_mask = (rm < m)[:, None] & (rn < n)[None, :]
    tl.store(y_ptr + rm[:, None] * n + rn[None, :], acc.to(y_ptr.dtype.element_ty), mask=y_mask)


def fused_matmul(
    x: torch.Tensor,
    scheme: str,
    codes: torch.Tensor,
    scales: torch.Tensor,
    out_features: int,
    *,
    blocksize: int,
) -> torch.Tensor:
    """Return ``x @ deq(W)^T`` for a 2-D contiguous ``x`` of shape (tokens, in_features)."""
    if x.dim() != 2 or not x.is_contiguous():
        raise ValueError("fused_matmul needs a contiguous 2-D input")
    tokens, in_features = x.shape
    y = torch.empty((tokens, out_features), dtype=x.dtype, device=x.device)
    if tokens == 0:
        return y
    grid = (triton.cdiv(tokens, BM), triton.cdiv(out_features, BN))
    _matmul_kernel[grid](
        x,
        codes,
        scales,
        _table(codes.device),
        y,
        tokens,
        out_features,
        in_features,
        NF4=scheme == "nf4",
        IEEE=x.dtype == torch.float32,
        BLOCKSIZE=blocksize,
        BM=BM,
        BN=BN,
        BK=BK,
    )
    return y
