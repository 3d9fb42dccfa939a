"""PEFT adapter tensor names <-> per-module (B, A) factor pairs."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedft.core.layout import A_SUFFIX, B_SUFFIX


def split_modules(
    tensors: Mapping[str, torch.Tensor],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Group adapter tensors into ``{module: (B, A)}``; raise ValueError on anything unpaired."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in tensors:
        if name.endswith(A_SUFFIX):
            module = name.removesuffix(A_SUFFIX)
        elif name.endswith(B_SUFFIX):
            module = name.removesuffix(B_SUFFIX)
        else:
            raise ValueError(f"{name} is not a LoRA A or B weight")
        if module in out:
            continue
        a, b = tensors.get(module + A_SUFFIX), tensors.get(module + B_SUFFIX)
        if a is None or b is None:
            raise ValueError(f"{module} lacks its {'A' if a is None else 'B'} factor")
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise ValueError(
                f"{module}: B {tuple(b.shape)} and A {tuple(a.shape)} are not LoRA factors"
            )
        out[module] = (b, a)
    return out


def join_modules(
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`split_modules`: fp32 tensors under PEFT's state-dict names."""
    out: dict[str, torch.Tensor] = {}
    for module, (b, a) in factors.items():
        out[module + A_SUFFIX] = a.to(torch.float32).contiguous()
        out[module + B_SUFFIX] = b.to(torch.float32).contiguous()
    return out
