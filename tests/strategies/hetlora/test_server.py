"""Server half of hetlora: ranks by device speed, truncation, zero-padded norm-weighted mean."""

from __future__ import annotations

import torch

from fedft.core.device import DeviceProfile
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.hetero_base.modules import split_modules
from fedft.strategies.hetlora import HetLoRAConfig, HetLoRAServer
from fedft.strategies.hetlora.server import speed_rank

D = 12
MODULES = [f"base_model.model.model.layers.{layer}.self_attn.q_proj" for layer in range(3)]


def make_server() -> HetLoRAServer:
    config = HetLoRAConfig.from_dict({"max_rank": 8, "min_rank": 2, "target_modules": ["q_proj"]})
    server = HetLoRAServer(config, seed=1)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for m in MODULES:
        tensors[m + ".lora_A.weight"] = torch.randn(8, D, generator=g)
        tensors[m + ".lora_B.weight"] = torch.zeros(D, 8)
    server.initialize(Payload(tensors=tensors))
    return server


def props(slowdown: float) -> dict[str, float]:
    return DeviceProfile(
        fwd_s=0.1 * slowdown, bwd_layer_s=0.1 * slowdown, num_layers=3,
        memory_mb=1e4, act_layer_mb=1.0, link_mbps=100.0, slowdown=slowdown,
    ).to_properties()  # fmt: skip


def test_speed_rank() -> None:
    assert speed_rank(1.0, 1.0, 2, 8) == 8
    assert speed_rank(4.0, 1.0, 2, 8) == 2
    assert speed_rank(2.0, 1.0, 2, 8) == 4
    assert speed_rank(100.0, 1.0, 2, 8) == 2


def test_slow_devices_get_lower_ranks_on_every_layer() -> None:
    server = make_server()
    tasks = {
        t.client_id: t.payload
        for t in server.configure(
            1, [ClientInfo("f", 5, props(1.0)), ClientInfo("s", 5, props(4.0))]
        )
    }
    fast, slow = (Layout.from_config(tasks[c].config) for c in ("f", "s"))
    assert fast.layers == slow.layers == (0, 1, 2)
    assert set(fast.ranks) == {8}
    assert set(slow.ranks) == {2}
    a_fast = split_modules(tasks["f"].tensors)[MODULES[0]][1]
    a_slow = split_modules(tasks["s"].tensors)[MODULES[0]][1]
    # Truncation: the slow device gets the first rows, rescaled for its own alpha / r.
    assert torch.allclose(a_slow, a_fast[:2] * (16 / 8) ** 0.5 / (16 / 2) ** 0.5, atol=1e-6)


def test_aggregate_and_resume() -> None:
    server = make_server()
    tasks = server.configure(1, [ClientInfo("f", 5, props(1.0)), ClientInfo("s", 5, props(4.0))])
    g = torch.Generator().manual_seed(3)
    results = [
        Result(
            t.client_id,
            Payload(
                tensors={
                    n: v + 0.1 * torch.randn(v.shape, generator=g)
                    for n, v in t.payload.tensors.items()
                },
                metrics={"num_examples": 5},
            ),
        )
        for t in tasks
    ]
    before = server.global_state().tensors
    metrics = server.aggregate(1, results, [])
    assert metrics["accepted"] == 2
    after = server.global_state().tensors
    assert any(not torch.allclose(before[n], after[n]) for n in before)
    restored = HetLoRAServer(server.config, seed=1)
    restored.load_state_dict(payload_from_bytes(payload_to_bytes(server.state_dict())))
    again = restored.global_state().tensors
    assert all(torch.allclose(after[n], again[n]) for n in after)


def test_self_pruning_caps_the_rank_of_a_device_whose_tail_shrank() -> None:
    config = HetLoRAConfig.from_dict(
        {"max_rank": 8, "min_rank": 2, "target_modules": ["q_proj"], "prune_gamma": 0.25}
    )
    server = HetLoRAServer(config, seed=1)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for m in MODULES:
        tensors[m + ".lora_A.weight"] = torch.randn(8, D, generator=g)
        tensors[m + ".lora_B.weight"] = torch.zeros(D, 8)
    server.initialize(Payload(tensors=tensors))
    # As after a first round: B is no longer zero, so the tail has a norm to lose.
    server.global_factors = {
        m: (0.1 * torch.randn(D, 8, generator=g, dtype=torch.float64), a)
        for m, (_, a) in server.global_factors.items()
    }
    clients = [ClientInfo("shrinks", 5, props(1.0)), ClientInfo("grows", 5, props(1.0))]
    results = []
    for task in server.configure(1, clients):
        trained = {}
        for name, value in task.payload.tensors.items():
            tail = value.clone()
            factor = 0.5 if task.client_id == "shrinks" else 2.0
            if name.endswith("lora_A.weight"):
                tail[6:] *= factor  # the last gamma * 8 = 2 components
            else:
                tail[:, 6:] *= factor
            trained[name] = tail
        results.append(
            Result(task.client_id, Payload(tensors=trained, metrics={"num_examples": 5}))
        )
    assert server.aggregate(1, results, [])["accepted"] == 2
    assert server.rank_caps == {"shrinks": 6}
    plan = {t.client_id: Layout.from_config(t.payload.config) for t in server.configure(2, clients)}
    assert set(plan["shrinks"].ranks) == {6}
    assert set(plan["grows"].ranks) == {8}
    restored = HetLoRAServer(config, seed=1)
    restored.load_state_dict(server.state_dict())
    assert restored.rank_caps == {"shrinks": 6}
