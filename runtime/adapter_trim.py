"""Trim an exported PEFT adapter to its real ranks: no zero padding, same outputs.

Heterogeneous-rank strategies (legend, hetlora, flexlora) keep the global adapter at one rank
everywhere; a layer that devices trained at rank 4 holds 4 live rank components and the rest
at zero (B's columns start at zero and nobody moved them), and a layer nobody trained holds
none. The export cuts each module to its last live component and writes the ranks into
``rank_pattern``, with ``alpha_pattern`` keeping PEFT's ``alpha / r`` scale unchanged, so the
adapter a user loads is as small as what was trained and computes the same function. A module
with no live component is left out of the adapter altogether.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fedft.core.layout import A_SUFFIX, B_SUFFIX

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
# PEFT saves tensors under the PeftModel's names; patterns match the base model's module names.
SAVED_PREFIX = "base_model.model."


def live_rank(a: torch.Tensor, b: torch.Tensor) -> int:
    """One past the last rank component ``i`` whose ``B[:, i] A[i, :]`` is not all zero."""
    live = (a != 0).any(dim=1) & (b != 0).any(dim=0)
    indices = torch.nonzero(live).flatten()
    return int(indices[-1]) + 1 if indices.numel() else 0


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    """The value PEFT would pick for ``module`` from a rank/alpha pattern (first match wins)."""
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def trim_adapter(folder: Path) -> dict[str, int]:
    """Cut the adapter in ``folder`` to its live ranks in place; returns {module: new rank}.

    Only modules whose rank changed are listed (0: dropped). Nothing is written when no module
    changes, or when no module is live at all (an untrained adapter stays as it is).
    """
    tensors = load_file(str(folder / WEIGHTS))
    config: dict[str, Any] = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    rank_pattern: dict[str, Any] = dict(config.get("rank_pattern") or {})
    alpha_pattern: dict[str, Any] = dict(config.get("alpha_pattern") or {})
    changed: dict[str, int] = {}
    new_ranks: dict[str, int] = {}
    new_alphas: dict[str, float] = {}
    kept: list[str] = []
    for name in sorted(k for k in tensors if k.endswith(A_SUFFIX)):
        saved = name.removesuffix(A_SUFFIX)
        module = saved.removeprefix(SAVED_PREFIX)
        a, b = tensors[saved + A_SUFFIX], tensors[saved + B_SUFFIX]
        rank, live = a.shape[0], live_rank(a, b)
        if live == 0:
            del tensors[saved + A_SUFFIX], tensors[saved + B_SUFFIX]
            changed[module] = 0
            continue
        kept.append(module)
        if live == rank:
            continue
        tensors[saved + A_SUFFIX] = a[:live].contiguous()
        tensors[saved + B_SUFFIX] = b[:, :live].contiguous()
        alpha = _pattern_value(alpha_pattern, module, config["lora_alpha"])
        key = re.escape(module)
        new_ranks[key] = live
        new_alphas[key] = float(alpha) * live / rank  # PEFT scales by alpha / r: keep the scale
        changed[module] = live
    if not changed or not kept:
        return {}  # nothing to cut, or an untrained adapter: PEFT needs at least one module
    # Exact module names go first: PEFT takes the first pattern that matches.
    config["rank_pattern"] = {**new_ranks, **rank_pattern}
    config["alpha_pattern"] = {**new_alphas, **alpha_pattern}
    if any(rank == 0 for rank in changed.values()):
        config["target_modules"] = kept  # full names: PEFT matches them as name suffixes
        config["layers_to_transform"] = None
        config["layers_pattern"] = None
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")
    return changed
