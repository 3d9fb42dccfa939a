"""A LoRA adapter's layout (which layers, which ranks), as a strategy's reply reports it to hosts.

Hosts show each client's LoRA depth and ranks in their reports. They read them from the reply's
metrics, written by the strategy's client half with :func:`report_layout`, and never parse a
strategy's wire keys or tensor names themselves: only the strategy knows its layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping, Sequence

import torch

from fedft.core.payload import MetricValue

# Names of the transformer-block list in common architectures (Llama: layers, GPT-2: h).
LAYER_LIST = r"(?:layers|layer|h|blocks)"
_LAYER = re.compile(rf"\.{LAYER_LIST}\.(\d+)\.")
# PEFT's state-dict names of a module's LoRA factors: MODULE.lora_A.weight, MODULE.lora_B.weight.
A_SUFFIX, B_SUFFIX = ".lora_A.weight", ".lora_B.weight"

LORA_DEPTH = "lora_depth"
# One metric per adapted layer, bottom to top: lora_rank.0, lora_rank.1, ... (metrics are scalars).
LORA_RANK = "lora_rank."


def layer_of(module: str) -> int:
    """Return the transformer layer index in a module name (``...layers.7.self_attn.q_proj``)."""
    match = _LAYER.search(module + ".")
    if match is None:
        raise ValueError(f"cannot find a layer index in module name {module!r}")
    return int(match.group(1))


def adapter_ranks(tensors: Mapping[str, torch.Tensor]) -> list[int]:
    """Per adapted layer, bottom to top, the largest LoRA rank among its modules.

    Adapters outside the transformer blocks (an ``lm_head`` LoRA, say) have no layer and are
    not counted.
    """
    per_layer: dict[int, int] = {}
    for name, t in tensors.items():
        if not name.endswith(A_SUFFIX) or t.dim() != 2:
            continue
        try:
            layer = layer_of(name.removesuffix(A_SUFFIX))
        except ValueError:
            continue
        per_layer[layer] = max(per_layer.get(layer, 0), int(t.shape[0]))
    return [per_layer[k] for k in sorted(per_layer)]


def report_layout(metrics: MutableMapping[str, MetricValue], ranks: Sequence[int]) -> None:
    """Write a reply's LoRA layout (``ranks`` bottom to top) into its metrics."""
    metrics[LORA_DEPTH] = len(ranks)
    for position, rank in enumerate(ranks):
        metrics[f"{LORA_RANK}{position}"] = int(rank)


def reported_layout(metrics: Mapping[str, MetricValue]) -> tuple[int, list[int]]:
    """Read back what :func:`report_layout` wrote: (depth, ranks); (0, []) when none was."""
    depth = int(metrics.get(LORA_DEPTH, 0))
    ranks = [int(metrics.get(f"{LORA_RANK}{i}", 0)) for i in range(depth)]
    return depth, ranks
