"""Which parameters a seed-based strategy trains, and how they split into blocks."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

import torch

from fedft.kernels.seed_ops import FlatParams

TRAINABLE_HELP = (
    "parameters to tune: 'all', 'lora' (LoRA adapters of rank lora_rank), or comma-separated "
    "regular expressions matched against parameter names (e.g. 'self_attn' for attention only)"
)


def check_trainable(spec: str) -> str | None:
    """Return why ``spec`` is not a valid trainable-set spec, or None."""
    if spec in ("all", "lora"):
        return None
    patterns = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in patterns):
        return "trainable must be 'all', 'lora' or comma-separated regular expressions"
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"trainable pattern {pattern!r} is not a regular expression: {exc}"
    return None


def select_parameters(model: torch.nn.Module, spec: str) -> dict[str, torch.Tensor]:
    """Return the parameters ``spec`` names, by parameter name (tied weights appear once)."""
    named: dict[str, torch.Tensor] = dict(model.named_parameters())
    if spec == "all":
        chosen = named
    elif spec == "lora":
        chosen = {n: p for n, p in named.items() if "lora_" in n}
        if not chosen:
            raise ValueError("trainable='lora' but the model has no LoRA adapters")
    else:
        patterns = [re.compile(p.strip()) for p in spec.split(",")]
        chosen = {n: p for n, p in named.items() if any(pat.search(n) for pat in patterns)}
        if not chosen:
            raise ValueError(f"no parameter name matches trainable={spec!r}")
    return chosen


def flat_trainable(model: torch.nn.Module, spec: str) -> FlatParams:
    """Return the selected parameters as one fp32 vector in the RNG contract's order."""
    chosen = select_parameters(model, spec)
    wrong = sorted(n for n, p in chosen.items() if p.dtype != torch.float32)
    if wrong:
        raise ValueError(
            f"seed-based strategies need fp32 weights (replays are lost in 16-bit); "
            f"{wrong[0]} is {chosen[wrong[0]].dtype}: load the model in float32"
        )
    return FlatParams(chosen)


def block_ends(params: FlatParams, target: int = 0) -> list[int]:
    """Split the parameter stream into blocks of whole parameters; returns each block's end.

    Parameters are taken in layout order and a block closes before it would pass ``target``
    elements (a larger parameter is a block of its own). ``target=0`` uses 0.9 times the
    median parameter size, the grouping of Ferret's reference code.
    """
    sizes = [entry.numel for entry in params.layout]
    if target <= 0:
        target = max(1, int(0.9 * statistics.median(sizes)))
    ends: list[int] = []
    filled = 0
    for entry in params.layout:
        if filled and entry.numel and filled + entry.numel > target:
            ends.append(entry.offset)
            filled = 0
        filled += entry.numel
    ends.append(params.total)
    return ends


Span = tuple[int, int]


def module_order_blocks(
    params: FlatParams, order: Sequence[str], target: int = 0
) -> list[tuple[Span, ...]]:
    """Group parameters into blocks in the model's module order, as Ferret's reference does.

    The reference scans ``named_parameters()`` (module order: ``layers.2`` before ``layers.10``,
    attention before the MLP); the stream stays in the RNG contract's name order, so a block is
    a set of ``[start, end)`` spans of the stream (adjacent spans merged). Same closing rule and
    default ``target`` as :func:`block_ends`.
    """
    entries = [params.layout.entry(name) for name in order]
    if sorted(e.name for e in entries) != sorted(params.layout.names):
        raise ValueError("order must name every parameter of the stream exactly once")
    if target <= 0:
        target = max(1, int(0.9 * statistics.median(e.numel for e in params.layout)))
    groups: list[list[Span]] = [[]]
    filled = 0
    for entry in entries:
        if filled and entry.numel and filled + entry.numel > target:
            groups.append([])
            filled = 0
        filled += entry.numel
        spans = groups[-1]
        if spans and spans[-1][1] == entry.offset:
            spans[-1] = (spans[-1][0], entry.offset + entry.numel)
        else:
            spans.append((entry.offset, entry.offset + entry.numel))
    return [tuple(s for s in group if s[1] > s[0]) for group in groups]
