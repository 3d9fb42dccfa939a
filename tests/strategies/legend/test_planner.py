"""LEGEND-style planning: rising rank profiles, stragglers lose depth, memory bounds depth."""

from __future__ import annotations

import pytest

from fedft.core.device import DeviceProfile
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.legend.planner import CostModel, plan_layouts, rank_profile

LAYERS = list(range(8))
COST = CostModel(dict.fromkeys(LAYERS, 1000), local_steps=10)


def device(slowdown: float, *, memory_mb: float = 1e6, link_mbps: float = 1e4) -> DeviceProfile:
    return DeviceProfile(
        fwd_s=0.1 * slowdown,
        bwd_layer_s=0.05 * slowdown,
        num_layers=8,
        memory_mb=memory_mb,
        act_layer_mb=100.0,
        link_mbps=link_mbps,
        slowdown=slowdown,
    )


def test_rank_profile_rises_toward_the_output() -> None:
    assert rank_profile(1, 2, 8) == (8,)
    ranks = rank_profile(6, 2, 8)
    assert list(ranks) == sorted(ranks)
    assert ranks[-1] == 8
    assert ranks[0] >= 2
    assert all(r % 2 == 0 for r in ranks)
    with pytest.raises(ValueError, match="depth must be"):
        rank_profile(0, 2, 8)


def test_equal_devices_keep_full_depth() -> None:
    plan = plan_layouts(
        {f"c{i}": device(1.0) for i in range(4)},
        LAYERS,
        COST,
        min_rank=2,
        max_rank=8,
        min_depth=1,
        balance=0.1,
    )
    assert {p.depth for p in plan.values()} == {8}
    assert plan["c0"].layers == tuple(LAYERS)


def test_slow_devices_lose_depth_until_rounds_balance() -> None:
    profiles = {"f0": device(1.0), "f1": device(1.0), "m0": device(2.0), "s0": device(4.0)}
    plan = plan_layouts(profiles, LAYERS, COST, min_rank=2, max_rank=8, min_depth=1, balance=0.1)
    assert plan["f0"].depth == 8
    assert plan["s0"].depth < plan["m0"].depth < 8
    # LoRA sits on the top layers: the output end is always adapted, at the largest rank.
    for layout in plan.values():
        assert layout.layers[-1] == LAYERS[-1]
        assert layout.ranks[-1] == 8
    times = {cid: COST.seconds(profiles[cid], plan[cid]) for cid in plan}
    uniform = max(
        COST.seconds(p, Layout.top(LAYERS, rank_profile(8, 2, 8))) for p in profiles.values()
    )
    assert max(times.values()) < uniform


def test_min_depth_is_a_floor() -> None:
    profiles = {"f": device(1.0), "s": device(50.0)}
    plan = plan_layouts(profiles, LAYERS, COST, min_rank=2, max_rank=8, min_depth=3, balance=0.0)
    assert plan["s"].depth == 3


def test_memory_caps_depth() -> None:
    profiles = {"roomy": device(1.0), "tight": device(1.0, memory_mb=350.0)}
    plan = plan_layouts(profiles, LAYERS, COST, min_rank=2, max_rank=8, min_depth=1, balance=10.0)
    assert plan["roomy"].depth == 8
    assert plan["tight"].depth == 3  # 100 MB of activations per layer: 3 layers fit in 350 MB


def test_devices_without_a_profile_keep_full_depth() -> None:
    plan = plan_layouts(
        {"known": device(4.0), "unknown": None},
        LAYERS,
        COST,
        min_rank=2,
        max_rank=8,
        min_depth=1,
        balance=0.1,
    )
    assert plan["unknown"].depth == 8


def test_memory_counts_the_base_weights() -> None:
    # 350 MB hold 3 layers of 100 MB activations; 200 MB of weights leave room for just 1.
    heavy = DeviceProfile(
        fwd_s=0.1, bwd_layer_s=0.05, num_layers=8, memory_mb=350.0,
        act_layer_mb=100.0, link_mbps=1e4, base_mb=200.0,
    )  # fmt: skip
    plan = plan_layouts(
        {"roomy": device(1.0), "heavy": heavy},
        LAYERS,
        COST,
        min_rank=2,
        max_rank=8,
        min_depth=1,
        balance=10.0,
    )
    assert plan["heavy"].depth == 1
    assert COST.memory_mb(heavy, plan["heavy"]) <= heavy.memory_mb
    assert DeviceProfile.from_properties(heavy.to_properties()) == heavy


def test_a_straggler_at_min_depth_that_is_still_far_the_slowest_loses_rank() -> None:
    # A slow link: at depth 1 the device still moves the top layer's factors at rank 8.
    cost = CostModel(dict.fromkeys(LAYERS, 200_000), local_steps=1)
    profiles = {"f0": device(1.0), "f1": device(1.0), "s": device(1.0, link_mbps=1.0)}
    plan = plan_layouts(profiles, LAYERS, cost, min_rank=2, max_rank=8, min_depth=1, balance=0.1)
    assert plan["s"].depth == 1
    assert plan["s"].ranks == (2,)  # the old loop stopped here at rank 8
    at_rank_8 = cost.seconds(profiles["s"], Layout.top(LAYERS, (8,)))
    assert cost.seconds(profiles["s"], plan["s"]) < at_rank_8 / 3
