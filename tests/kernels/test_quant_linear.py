"""QuantLinear: forward and input gradients equal a linear layer on the dequantized weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedft.kernels.quant import dequantize
from fedft.kernels.quant_linear import QuantLinear

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# (tokens, in, out): odd sizes, fewer tokens than features, a padded last block.
SHAPES: list[tuple[int, int, int]] = [(5, 13, 7), (33, 64, 96), (1, 100, 3)]
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3)}


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("scheme", ["nf4", "int8"])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_input_grad_match_dequantized_linear(
    backend: str, scheme: str, shape: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", backend)
    m, k, n = shape
    gen = torch.Generator().manual_seed(m * k + n)
    linear = torch.nn.Linear(k, n)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, k, generator=gen))
        linear.bias.copy_(torch.randn(n, generator=gen))
    layer = QuantLinear.from_linear(linear.to(DEVICE), scheme)
    weight = dequantize(layer.quantized, torch.float32)
    x = torch.randn(2, m, k, generator=gen).to(DEVICE).requires_grad_(True)
    y = layer(x)
    grad_out = torch.randn(y.shape, generator=gen).to(DEVICE)
    y.backward(grad_out)
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref = F.linear(x_ref, weight, linear.bias.detach())
    y_ref.backward(grad_out)
    rtol, atol = TOLERANCE[torch.float32]
    torch.testing.assert_close(y, y_ref, rtol=rtol, atol=atol)
    assert x.grad is not None
    assert x_ref.grad is not None
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=rtol, atol=atol)
    # The quantized weight is close to the original one (NF4 coarsely, int8 finely).
    bound = 0.6 if scheme == "nf4" else 0.02
    assert (weight - linear.weight.detach()).abs().max() < bound


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_half_precision_activations(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # fp16, not bf16: the interpreter truncates bf16 stores (see docs/architecture.md, Kernels).
    monkeypatch.setenv("FEDFT_KERNELS", backend)
    gen = torch.Generator().manual_seed(9)
    linear = torch.nn.Linear(64, 32, bias=False)
    layer = QuantLinear.from_linear(linear.to(DEVICE), "nf4")
    x = torch.randn(16, 64, generator=gen).to(DEVICE, torch.float16).requires_grad_(True)
    y = layer(x)
    assert y.dtype == torch.float16
    y.float().sum().backward()
    weight = dequantize(layer.quantized, torch.float32)
    expected = (x.detach().float() @ weight.T).to(torch.float16)
    rtol, atol = TOLERANCE[torch.float16]
    torch.testing.assert_close(y.float(), expected.float(), rtol=rtol, atol=atol)
    assert x.grad is not None
    torch.testing.assert_close(
        x.grad.float(), weight.sum(0).expand(16, 64).to(torch.float16).float(), rtol=rtol, atol=atol
    )


def test_quantized_layer_stores_less_and_has_no_trainable_weight() -> None:
    linear = torch.nn.Linear(256, 128)
    layer = QuantLinear.from_linear(linear, "nf4")
    full = linear.weight.numel() * 4
    stored = layer.qweight.numel() + layer.scales.numel() * 4
    assert stored / full == pytest.approx(4.5 / 32)  # 4 bits + one fp32 per 64 weights
    assert [p for p in layer.parameters() if p.requires_grad] == []
    assert "scheme=nf4" in repr(layer)
