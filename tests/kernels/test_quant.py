"""Block-wise NF4/int8 quantization: reference properties, Triton dequantize bit for bit."""

from __future__ import annotations

import itertools

import pytest
import torch

from fedft.kernels.quant import dequantize, quantize
from fedft.kernels.reference.quant import NF4_CODE

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Odd shapes: a last block that is padded, fewer values than one block, rows not multiple of 64.
SHAPES = [(7, 13), (64, 64), (33, 100), (1, 5)]


def test_nf4_packs_high_nibble_first() -> None:
    # One block whose absmax is 1: the values are exactly the code book, in order.
    weight = torch.tensor(NF4_CODE, dtype=torch.float32)
    q = quantize(weight, "nf4", blocksize=16)
    assert q.codes.tolist() == [(2 * i << 4) | (2 * i + 1) for i in range(8)]
    assert q.scales.tolist() == [1.0]
    assert torch.equal(dequantize(q), weight)


@pytest.mark.parametrize("shape", SHAPES)
def test_nf4_error_is_at_most_half_a_level_gap(shape: tuple[int, int]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    q = quantize(weight, "nf4")
    assert q.codes.dtype == torch.uint8
    assert q.codes.numel() * 2 == q.scales.numel() * 64  # two codes per byte, padded blocks
    error = (dequantize(q) - weight).abs().reshape(-1)
    gap = max(b - a for a, b in itertools.pairwise(NF4_CODE)) / 2
    scale = q.scales.repeat_interleave(64)[: weight.numel()]
    assert torch.all(error <= gap * scale + 1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_int8_error_is_at_most_half_a_step(shape: tuple[int, int]) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    q = quantize(weight, "int8")
    assert q.codes.dtype == torch.int8
    error = (dequantize(q) - weight).abs().reshape(-1)
    step = q.scales.repeat_interleave(64)[: weight.numel()]
    assert torch.all(error <= step / 2 + 1e-6)


def test_all_zero_blocks_decode_to_zero() -> None:
    for scheme in ("nf4", "int8"):
        q = quantize(torch.zeros(3, 64), scheme)
        assert torch.equal(dequantize(q), torch.zeros(3, 64))


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_dequantize_equals_reference(
    scheme: str, shape: tuple[int, int], dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    q = quantize(weight, scheme)
    monkeypatch.setenv("FEDFT_KERNELS", "torch")
    expected = dequantize(q, dtype)
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    q_dev = quantize(weight.to(DEVICE), scheme)
    got = dequantize(q_dev, dtype)
    assert got.shape == shape
    assert got.dtype == dtype
    assert torch.equal(got.cpu(), expected)


def test_quantize_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scheme"):
        quantize(torch.zeros(4), "fp4")
    with pytest.raises(ValueError, match="blocksize"):
        quantize(torch.zeros(4), "nf4", blocksize=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_gpu_bf16_dequantize_equals_reference(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the GPU bf16 stores round to nearest even, as torch does (the interpreter truncates)."""
    weight = torch.randn(1000, 333, generator=torch.Generator().manual_seed(3))
    q = quantize(weight, scheme)
    monkeypatch.setenv("FEDFT_KERNELS", "torch")
    expected = dequantize(q, torch.bfloat16)
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    got = dequantize(quantize(weight.cuda(), scheme), torch.bfloat16)
    assert torch.equal(got.cpu(), expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_quantize_on_cuda_gives_the_cpu_bits(scheme: str) -> None:
    """A base quantized on a GPU client holds the same codes and scales as a CPU client's."""
    weight = torch.randn(4096, 1024, generator=torch.Generator().manual_seed(4))
    on_cpu = quantize(weight, scheme)
    on_gpu = quantize(weight.cuda(), scheme)
    assert torch.equal(on_gpu.codes.cpu(), on_cpu.codes)
    assert torch.equal(on_gpu.scales.cpu(), on_cpu.scales)


def test_int8_scales_are_true_divisions() -> None:
    # absmax / 127 rounded once (what the CPU computes), not absmax * (1 / 127), which CUDA uses
    # for a division by a Python scalar and which differs in the last bit for ~4% of blocks.
    weight = torch.rand(64 * 4096, generator=torch.Generator().manual_seed(5)) * 3
    scales = quantize(weight, "int8", blocksize=64).scales
    absmax = weight.view(-1, 64).abs().amax(dim=1)
    exact = (absmax.double() / 127).float()
    assert torch.equal(scales, exact)
