"""Pure-torch reference of block-wise weight quantization: NF4 (QLoRA) and int8, any device.

A weight is flattened (row-major) and cut into blocks of ``blocksize`` values; the last block is
zero-padded. Each block keeps one fp32 scale: NF4 stores its absmax and 4-bit indices into the
NF4 code book (two per byte, high nibble first, as bitsandbytes); int8 stores absmax/127 and
rounded int8 values. Dequantizing is one fp32 multiply ``value * scale`` per element, rounded
once to the output dtype, so the Triton kernel reproduces it bit for bit.
"""

from __future__ import annotations

import torch

# The 16 NF4 levels of QLoRA (Dettmers et al. 2023): quantiles of N(0, 1) scaled to [-1, 1],
# with an exact zero; the same values as bitsandbytes' NF4 table.
NF4_CODE = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
INT8_MAX = 127


def nf4_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """Return the NF4 code book as an fp32 tensor of 16 values."""
    return torch.tensor(NF4_CODE, dtype=torch.float32, device=device)


def _blocks(weight: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Return the weight as fp32 ``(blocks, blocksize)``, zero-padded at the end."""
    flat = weight.detach().reshape(-1).to(torch.float32)
    pad = (-flat.numel()) % blocksize
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, blocksize)


def quantize_nf4(weight: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(codes, absmax)``: packed uint8 nibbles and one fp32 absmax per block."""
    blocks = _blocks(weight, blocksize)
    absmax = blocks.abs().amax(dim=1)
    # An all-zero block keeps scale 0: every value decodes to 0 whatever its code.
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    normed = (blocks / safe[:, None]).reshape(-1)
    table = nf4_table(weight.device)
    # Nearest level: count the midpoints below each value.
    midpoints = (table[1:] + table[:-1]) / 2
    index = torch.bucketize(normed, midpoints).to(torch.uint8)
    pairs = index.view(-1, 2)
    codes = (pairs[:, 0] << 4) | pairs[:, 1]
    return codes.contiguous(), absmax.contiguous()


def quantize_int8(weight: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(codes, scales)``: int8 values and one fp32 scale (absmax/127) per block."""
    blocks = _blocks(weight, blocksize)
    absmax = blocks.abs().amax(dim=1)
    # Divide by a tensor, not a Python number: CUDA turns division by a scalar into a multiply by
    # its reciprocal, one ulp off the CPU's true division for ~4% of values; this gives every
    # device the CPU's bits.
    scales = absmax / torch.full_like(absmax, INT8_MAX)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(blocks / safe[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q.reshape(-1).contiguous(), scales.contiguous()


def dequantize(
    scheme: str,
    codes: torch.Tensor,
    scales: torch.Tensor,
    numel: int,
    *,
    blocksize: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Return the first ``numel`` dequantized values (flat) in ``dtype``."""
    if scheme == "nf4":
        index = torch.stack([codes >> 4, codes & 0xF], dim=1).reshape(-1).long()
        values = nf4_table(codes.device)[index]
    elif scheme == "int8":
        values = codes.to(torch.float32)
    else:
        raise ValueError(f"unknown quantization scheme {scheme!r}")
    out = values.view(-1, blocksize).mul_(scales[:, None]).reshape(-1)
    return out[:numel].to(dtype)
