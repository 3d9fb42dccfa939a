"""Block-wise NF4/int8 quantization of frozen weights; dequantize dispatched to torch or Triton."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedft.kernels.dispatch import use_triton
from fedft.kernels.reference import quant as reference_quant

SCHEMES = ("nf4", "int8")
DEFAULT_BLOCKSIZE = 64


@dataclass(frozen=True)
class QuantizedWeight:
    """A quantized tensor: codes, one fp32 scale per block, and the original shape."""

    scheme: str
    codes: torch.Tensor
    scales: torch.Tensor
    shape: tuple[int, ...]
    blocksize: int

    @property
    def numel(self) -> int:
        """Number of values in the original tensor."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes held by the codes and scales."""
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * 4


def quantize(
    weight: torch.Tensor, scheme: str = "nf4", blocksize: int = DEFAULT_BLOCKSIZE
) -> QuantizedWeight:
    """Quantize ``weight`` block-wise (runs once per weight, in torch on its device)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    if blocksize < 2 or blocksize % 2:
        raise ValueError(f"blocksize must be even and >= 2, got {blocksize}")
    if scheme == "nf4":
        codes, scales = reference_quant.quantize_nf4(weight, blocksize)
    else:
        codes, scales = reference_quant.quantize_int8(weight, blocksize)
    return QuantizedWeight(scheme, codes, scales, tuple(weight.shape), blocksize)


def dequantize_parts(
    scheme: str,
    codes: torch.Tensor,
    scales: torch.Tensor,
    shape: tuple[int, ...],
    *,
    blocksize: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Return the dequantized tensor of ``shape`` in ``dtype`` (Triton on CUDA by default)."""
    numel = math.prod(shape)
    if use_triton("quant.dequantize", codes):
        from fedft.kernels.triton import quant as triton_quant

        flat = triton_quant.dequantize(
            scheme, codes, scales, numel, blocksize=blocksize, dtype=dtype
        )
    else:
        flat = reference_quant.dequantize(
            scheme, codes, scales, numel, blocksize=blocksize, dtype=dtype
        )
    return flat.view(shape)


def dequantize(q: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return ``q`` dequantized to ``dtype``."""
    return dequantize_parts(
        q.scheme, q.codes, q.scales, q.shape, blocksize=q.blocksize, dtype=dtype
    )
