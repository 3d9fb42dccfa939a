"""The fused small-M dequant-matmul kernel against a linear layer on the dequantized weight."""

from __future__ import annotations

import pytest
import torch

from fedft.kernels.quant import dequantize, quantize
from fedft.kernels.quant_linear import QuantLinear
from fedft.kernels.triton.quant_matmul import fused_matmul

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# (tokens, in, out): a tile edge, odd sizes that straddle quantization blocks, one token.
SHAPES = [(5, 13, 7), (17, 100, 70), (1, 64, 130)]


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_matmul_matches_dequantize_then_matmul(
    scheme: str, shape: tuple[int, int, int], dtype: torch.dtype
) -> None:
    m, k, n = shape
    gen = torch.Generator().manual_seed(m + k + n)
    q = quantize(torch.randn(n, k, generator=gen).to(DEVICE), scheme)
    x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    y = fused_matmul(x, scheme, q.codes, q.scales, n, blocksize=q.blocksize)
    assert y.shape == (m, n)
    assert y.dtype == dtype
    # The kernel rounds W to the activation dtype, multiplies exactly and accumulates in fp32.
    weight = dequantize(q, dtype).float()
    expected = x.float() @ weight.T
    if dtype == torch.float32:
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)
    else:
        torch.testing.assert_close(y.float(), expected, rtol=2e-3, atol=2e-2)


def test_quant_linear_takes_the_fused_path_below_its_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    layer = QuantLinear.from_linear(torch.nn.Linear(96, 40).to(DEVICE), "nf4")
    x = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    split = layer(x)
    calls: list[int] = []
    import fedft.kernels.triton.quant_matmul as module

    real = module.fused_matmul

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "fused_matmul", spy)
    layer.fused_max_tokens = 6
    fused = layer(x)
    assert calls == [1]
    torch.testing.assert_close(fused, split, rtol=1e-5, atol=1e-4)
    layer.fused_max_tokens = 5  # 6 tokens: back to the split path
    layer(x)
    assert calls == [1]
