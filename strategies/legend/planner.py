"""LEGEND-style configuration: per device, LoRA depth and a rank profile rising to the output.

The paper's LCD algorithm is not public in detail (see docs/architecture.md); this is our
reading of its verified parts: depth = number of top layers with LoRA, ranks grow toward the
output, and a greedy loop shrinks the predicted straggler until round times are balanced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedft.core.device import DeviceProfile
from fedft.strategies.hetero_base.layout import Layout

BYTES_PER_VALUE = 4  # fp32 factors on the wire
OPTIMIZER_BYTES = 16  # fp32 weight, gradient and two AdamW moments per trainable value


def rank_profile(depth: int, min_rank: int, max_rank: int) -> tuple[int, ...]:
    """Ranks bottom to top for ``depth`` layers: linear from near ``min_rank`` up to ``max_rank``.

    Rounded to even ranks (except 1); the top layer always gets ``max_rank``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    ranks = []
    for i in range(depth):
        x = min_rank + (max_rank - min_rank) * (i + 1) / depth
        r = 2 * round(x / 2) if x >= 2 else round(x)
        ranks.append(max(min_rank, min(max_rank, r)))
    return tuple(ranks)


@dataclass(frozen=True)
class CostModel:
    """Predicts a device's round time and memory for a layout (the planner's objective)."""

    layer_width: Mapping[int, int]  # per layer: sum of (d_in + d_out) over adapted modules
    local_steps: int

    def adapter_values(self, layout: Layout) -> int:
        """Trainable (and transmitted) values of ``layout``."""
        return sum(
            r * self.layer_width[layer]
            for layer, r in zip(layout.layers, layout.ranks, strict=False)
        )

    def seconds(self, profile: DeviceProfile, layout: Layout) -> float:
        """Local training plus download and upload of the device's factors."""
        compute = self.local_steps * profile.step_seconds(layout.depth)
        wire = 2 * BYTES_PER_VALUE * self.adapter_values(layout)
        return compute + profile.transfer_seconds(wire)

    def memory_mb(self, profile: DeviceProfile, layout: Layout) -> float:
        """Base weights, activations kept for the backward pass, adapter and optimizer state.

        ``profile.memory_mb`` is the memory the device has for the model and its training, so
        the base weights (``profile.base_mb``) count against it like everything else.
        """
        return (
            profile.base_mb
            + profile.act_layer_mb * layout.depth
            + OPTIMIZER_BYTES * self.adapter_values(layout) / 1e6
        )


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _lower_rank(rank: int, min_rank: int) -> int:
    """The next smaller even rank (halving), not below ``min_rank``."""
    lower = rank // 2
    return max(min_rank, lower + lower % 2 if lower >= 2 else lower)


def plan_layouts(
    profiles: Mapping[str, DeviceProfile | None],
    layers: Sequence[int],
    cost: CostModel,
    *,
    min_rank: int,
    max_rank: int,
    min_depth: int,
    balance: float,
) -> dict[str, Layout]:
    """Greedy depth and rank assignment that shortens the predicted straggler's round.

    Every device starts at full depth (or as deep as its memory allows); the predicted
    straggler then loses its lowest LoRA layer until the slowest device is within
    ``(1 + balance)`` of the median. A straggler already at ``min_depth`` is not left as it is
    while still the slowest: its rank profile is capped lower (halving toward ``min_rank``),
    which shrinks its transfers and optimizer state. The loop stops only when the rounds are
    balanced or the straggler has no lever left.

    Devices without a profile keep full depth and do not take part in the balancing.
    """
    n = len(layers)
    floor = min(max(min_depth, 1), n)

    def layout(depth: int, cap: int = max_rank) -> Layout:
        return Layout.top(layers, rank_profile(depth, min(min_rank, cap), cap))

    depth: dict[str, int] = {}
    cap = dict.fromkeys(profiles, max_rank)
    for cid, profile in profiles.items():
        d = n
        while (
            profile is not None
            and d > floor
            and cost.memory_mb(profile, layout(d)) > profile.memory_mb
        ):
            d -= 1
        depth[cid] = d
    known = {cid: p for cid, p in profiles.items() if p is not None}
    while len(known) > 1:
        times = {cid: cost.seconds(p, layout(depth[cid], cap[cid])) for cid, p in known.items()}
        straggler = max(sorted(times), key=lambda cid: times[cid])
        if times[straggler] <= (1 + balance) * _median(list(times.values())):
            break
        if depth[straggler] > floor:
            depth[straggler] -= 1
        elif cap[straggler] > min_rank:
            cap[straggler] = _lower_rank(cap[straggler], min_rank)
        else:
            break
    return {cid: layout(d, cap[cid]) for cid, d in depth.items()}
