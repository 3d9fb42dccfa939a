"""Server half of legend: per-device tasks, exact aggregation into the global adapter, resume."""

from __future__ import annotations

import torch

from fedft.core.device import DeviceProfile
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.hetero_base.modules import split_modules
from fedft.strategies.legend import LegendConfig, LegendServer

LAYERS = 4
D = 16
MODULES = [
    f"base_model.model.model.layers.{layer}.self_attn.{m}"
    for layer in range(LAYERS)
    for m in ("q_proj", "v_proj")
]


def initial(rank: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for m in MODULES:
        out[m + ".lora_A.weight"] = torch.randn(rank, D, generator=g)
        out[m + ".lora_B.weight"] = torch.zeros(D, rank)
    return out


def profile(slowdown: float) -> dict[str, float]:
    return DeviceProfile(
        fwd_s=0.01 * slowdown, bwd_layer_s=0.02 * slowdown, num_layers=LAYERS,
        memory_mb=1e5, act_layer_mb=1.0, link_mbps=1e4, slowdown=slowdown,
    ).to_properties()  # fmt: skip


def make_server(**options: object) -> LegendServer:
    config = LegendConfig.from_dict(
        {"target_modules": ["q_proj", "v_proj"], "global_rank": 32, **options}
    )
    server = LegendServer(config, seed=3)
    server.initialize(Payload(tensors=initial(32)))
    return server


def trained(task: Payload, seed: int) -> dict[str, torch.Tensor]:
    """What a client might send back: its factors moved by random amounts."""
    g = torch.Generator().manual_seed(seed)
    return {n: t + 0.1 * torch.randn(t.shape, generator=g) for n, t in task.tensors.items()}


def test_tasks_follow_each_devices_plan() -> None:
    server = make_server()
    clients = [
        ClientInfo("fast", 10, profile(1.0)),
        ClientInfo("slow", 10, profile(8.0)),
        ClientInfo("plain", 10),
    ]
    tasks = {t.client_id: t.payload for t in server.configure(1, clients)}
    for _cid, payload in tasks.items():
        layout = Layout.from_config(payload.config)
        modules = split_modules(payload.tensors)
        assert {int(m.split(".layers.")[1].split(".")[0]) for m in modules} == set(layout.layers)
        for module, (b, a) in modules.items():
            layer = int(module.split(".layers.")[1].split(".")[0])
            assert a.shape == (layout.rank_of(layer), D)
            assert b.shape == (D, layout.rank_of(layer))
            assert torch.count_nonzero(b) == 0  # round 1: the update is still zero
    assert (
        Layout.from_config(tasks["slow"].config).depth
        < Layout.from_config(tasks["fast"].config).depth
    )
    assert Layout.from_config(tasks["plain"].config).depth == LAYERS


def test_aggregation_is_exact_and_the_global_adapter_carries_it() -> None:
    server = make_server()
    clients = [ClientInfo("fast", 30, profile(1.0)), ClientInfo("slow", 10, profile(8.0))]
    tasks = server.configure(1, clients)
    weights = {"fast": 30, "slow": 10}
    replies = {t.client_id: trained(t.payload, i) for i, t in enumerate(tasks)}
    results = [
        Result(cid, Payload(tensors=r, metrics={"num_examples": weights[cid], "train_loss": 1.0}))
        for cid, r in replies.items()
    ]
    metrics = server.aggregate(1, results, [])
    assert metrics["accepted"] == 2
    assert metrics["components_cut_from_global"] == 0
    glob = split_modules(server.global_state().tensors)
    alpha = server.config.alpha
    for module in MODULES:
        num = torch.zeros(D, D, dtype=torch.float64)
        den = 0.0
        for cid, reply in replies.items():
            parts = split_modules(reply)
            if module in parts:
                b, a = parts[module]
                num += weights[cid] * alpha / a.shape[0] * (b.double() @ a.double())
                den += weights[cid]
        b, a = glob[module]
        assert den > 0  # every layer has an owner: the fast device trains all of them
        got = alpha / 32 * (b.double() @ a.double())
        assert torch.allclose(got, num / den, atol=1e-6), module


def test_checkpoint_round_trip_through_the_wire_format() -> None:
    server = make_server()
    tasks = server.configure(
        1, [ClientInfo("a", 5, profile(1.0)), ClientInfo("b", 5, profile(3.0))]
    )
    server.aggregate(
        1,
        [
            Result(t.client_id, Payload(tensors=trained(t.payload, 9), metrics={"num_examples": 5}))
            for t in tasks
        ],
        [],
    )
    restored = LegendServer(server.config, seed=3)
    restored.load_state_dict(payload_from_bytes(payload_to_bytes(server.state_dict())))
    before, after = server.global_state().tensors, restored.global_state().tensors
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[n], after[n], atol=1e-6) for n in before)
    again = {
        t.client_id: t.payload for t in restored.configure(2, [ClientInfo("a", 5, profile(1.0))])
    }
    assert set(again) == {"a"}


def test_bad_updates_are_refused() -> None:
    server = make_server(max_rank=4)
    name = MODULES[0]
    good = {name + ".lora_A.weight": torch.ones(2, D), name + ".lora_B.weight": torch.ones(D, 2)}

    def check(tensors: dict[str, torch.Tensor], n: int = 3) -> str | None:
        return server.check_update(
            1, Result("c", Payload(tensors=tensors, metrics={"num_examples": n}))
        )

    assert check(good) is None
    assert "num_examples" in str(check(good, 0))
    assert "rank 6" in str(
        check(
            {name + ".lora_A.weight": torch.ones(6, D), name + ".lora_B.weight": torch.ones(D, 6)}
        )
    )
    assert "shape" in str(
        check(
            {
                name + ".lora_A.weight": torch.ones(2, D + 1),
                name + ".lora_B.weight": torch.ones(D, 2),
            }
        )
    )
    assert "lacks" in str(check({name + ".lora_A.weight": torch.ones(2, D)}))
    assert "not an adapted module" in str(
        check(
            {
                "x.layers.9.q.lora_A.weight": torch.ones(2, D),
                "x.layers.9.q.lora_B.weight": torch.ones(D, 2),
            }
        )
    )
    nan = dict(good)
    nan[name + ".lora_B.weight"] = torch.full((D, 2), float("nan"))
    assert "finite" in str(check(nan))


def test_updates_must_match_the_layout_their_task_assigned() -> None:
    server = make_server()
    clients = [ClientInfo("fast", 10, profile(1.0)), ClientInfo("slow", 10, profile(8.0))]
    tasks = {t.client_id: t.payload for t in server.configure(1, clients)}
    slow = Layout.from_config(tasks["slow"].config)
    fast = Layout.from_config(tasks["fast"].config)
    assert slow.depth < fast.depth

    def check(cid: str, tensors: dict[str, torch.Tensor], server_round: int = 1) -> str | None:
        payload = Payload(tensors=tensors, metrics={"num_examples": 10})
        return server.check_update(server_round, Result(cid, payload))

    assert check("slow", trained(tasks["slow"], 0)) is None
    # The slow device sends the fast device's (deeper) layout: layers it was not given.
    assert "assigned layers" in str(check("slow", trained(tasks["fast"], 0)))
    # Its own layers at another (smaller, so still within the bounds) rank.
    smaller = {
        n: t[:-1].clone() if ".lora_A." in n else t[:, :-1].clone()
        for n, t in tasks["slow"].tensors.items()
    }
    assert "the task assigned rank" in str(check("slow", smaller))
    # One of its modules left out.
    partial = dict(list(split_modules(tasks["slow"].tensors).items())[1:])
    flat = {
        f"{m}.lora_{k}.weight": t for m, (b, a) in partial.items() for k, t in (("A", a), ("B", b))
    }
    assert "missing" in str(check("slow", flat))
    # A round the plan does not belong to (e.g. after a restart) gets the shape checks only.
    assert check("slow", trained(tasks["fast"], 0), server_round=2) is None
    results = [
        Result("slow", Payload(tensors=trained(tasks["fast"], 0), metrics={"num_examples": 10}))
    ]
    assert server.aggregate(1, results, [])["rejected"] == 1


def test_factors_must_be_finite_in_float32_and_their_product_too() -> None:
    """Issue 14, defect 3 (hetero_base's base): 1e300 in float64 passed the finiteness check."""
    server = make_server(max_rank=4)
    name = MODULES[0]

    def check(a: torch.Tensor, b: torch.Tensor) -> str | None:
        tensors = {name + ".lora_A.weight": a, name + ".lora_B.weight": b}
        return server.check_update(
            1, Result("c", Payload(tensors=tensors, metrics={"num_examples": 3}))
        )

    huge = torch.full((2, D), 1e300, dtype=torch.float64)
    assert "finite" in str(check(huge, torch.ones(D, 2, dtype=torch.float64)))
    big = torch.full((2, D), 1e20)
    assert "overflow" in str(check(big, torch.full((D, 2), 1e20)))
    assert check(torch.ones(2, D), torch.ones(D, 2)) is None
