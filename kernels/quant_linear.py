"""``QuantLinear``: a frozen NF4/int8 linear layer that LoRA adapters train on top of.

Forward and input-gradient backward dequantize the weight into the activation dtype and call
the BLAS matmul (``dX = dY @ deq(W)``): for training-size token counts that beats a fused
dequant-GEMM (see docs/architecture.md, Kernels). The dequantized weight is dropped after each
use instead of being saved for backward, so a step holds at most one layer's full weight.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fedft.kernels.dispatch import use_triton
from fedft.kernels.quant import DEFAULT_BLOCKSIZE, QuantizedWeight, dequantize_parts, quantize


class _QuantMatmul(torch.autograd.Function):
    """``y = x @ deq(W)^T + b`` with ``dx = dy @ deq(W)``; W and b are frozen."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, layer: QuantLinear, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.layer = layer
        tokens = x.numel() // max(x.shape[-1], 1)
        if 0 < tokens <= layer.fused_max_tokens and use_triton("quant.fused_matmul", x):
            from fedft.kernels.triton.quant_matmul import fused_matmul

            flat = x.reshape(tokens, layer.in_features).contiguous()
            y = fused_matmul(
                flat,
                layer.scheme,
                layer.qweight,
                layer.scales,
                layer.out_features,
                blocksize=layer.blocksize,
            ).view(*x.shape[:-1], layer.out_features)
            return y if bias is None else y + bias.to(x.dtype)
        weight = layer.dequantized(x.dtype)
        return F.linear(x, weight, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        weight = ctx.layer.dequantized(grad_out.dtype)
        return grad_out.matmul(weight), None, None


class QuantLinear(torch.nn.Module):
    """A linear layer whose weight is stored block-quantized (NF4 or int8) and never trained."""

    qweight: torch.Tensor
    scales: torch.Tensor
    # Forward passes over at most this many tokens use the fused dequant-matmul kernel (Triton
    # only). 0 disables it: on H100 the split path wins from a few dozen tokens on (bitsandbytes'
    # sm90 heuristic), and our fused kernel's crossover is still to be measured on a GPU
    # (benchmarks/kernels.py prints both).
    fused_max_tokens: int = 0

    def __init__(
        self,
        quantized: QuantizedWeight,
        bias: torch.Tensor | None,
        *,
        compute_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if len(quantized.shape) != 2:
            raise ValueError(f"QuantLinear needs a 2-D weight, got shape {quantized.shape}")
        self.out_features, self.in_features = quantized.shape
        self.scheme = quantized.scheme
        self.blocksize = quantized.blocksize
        # PEFT reads ``compute_dtype`` to give the adapters the original weight's dtype, and finds
        # the device through ``qweight`` (the name GPTQ layers use).
        self.compute_dtype = compute_dtype
        self.register_buffer("qweight", quantized.codes)
        self.register_buffer("scales", quantized.scales)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(
        cls, linear: torch.nn.Linear, scheme: str = "nf4", blocksize: int = DEFAULT_BLOCKSIZE
    ) -> QuantLinear:
        """Quantize an ``nn.Linear``'s weight; the bias is kept as is (frozen)."""
        quantized = quantize(linear.weight.detach(), scheme, blocksize)
        return cls(quantized, linear.bias, compute_dtype=linear.weight.dtype)

    @property
    def quantized(self) -> QuantizedWeight:
        """The stored weight as a :class:`QuantizedWeight`."""
        shape = (self.out_features, self.in_features)
        return QuantizedWeight(self.scheme, self.qweight, self.scales, shape, self.blocksize)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """Return the weight dequantized to ``dtype`` (a fresh tensor each call)."""
        shape = (self.out_features, self.in_features)
        return dequantize_parts(
            self.scheme, self.qweight, self.scales, shape, blocksize=self.blocksize, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer: ``x @ deq(W)^T + b``."""
        out: torch.Tensor = _QuantMatmul.apply(x, self, self.bias)  # type: ignore[no-untyped-call]
        return out

    def extra_repr(self) -> str:
        """Describe the layer in ``repr``."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"scheme={self.scheme}, blocksize={self.blocksize}, bias={self.bias is not None}"
        )
