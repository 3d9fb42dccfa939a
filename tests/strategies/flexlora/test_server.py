"""Server half of flexlora: rank by device speed on every layer, exact sum of s B A, SVD back."""

from __future__ import annotations

import torch

from fedft.core.device import DeviceProfile
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.strategy import ClientInfo, Result
from fedft.strategies.flexlora import FlexLoRAConfig, FlexLoRAServer
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.hetero_base.modules import split_modules

D = 12
MODULES = [f"base_model.model.model.layers.{layer}.self_attn.q_proj" for layer in range(3)]
ALPHA = 16


def make_server() -> FlexLoRAServer:
    config = FlexLoRAConfig.from_dict(
        {"max_rank": 8, "min_rank": 2, "global_rank": 16, "target_modules": ["q_proj"]}
    )
    server = FlexLoRAServer(config, seed=1)
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for m in MODULES:
        tensors[m + ".lora_A.weight"] = torch.randn(16, D, generator=g)
        tensors[m + ".lora_B.weight"] = torch.zeros(D, 16)
    server.initialize(Payload(tensors=tensors))
    return server


def props(slowdown: float) -> dict[str, float]:
    return DeviceProfile(
        fwd_s=0.1 * slowdown, bwd_layer_s=0.1 * slowdown, num_layers=3,
        memory_mb=1e4, act_layer_mb=1.0, link_mbps=100.0, slowdown=slowdown,
    ).to_properties()  # fmt: skip


def test_registered_next_to_legend_and_hetlora() -> None:
    assert get_strategy("flexlora").server_cls is FlexLoRAServer


def test_every_layer_at_a_rank_from_the_devices_speed() -> None:
    server = make_server()
    clients = [ClientInfo("f", 5, props(1.0)), ClientInfo("s", 5, props(4.0))]
    tasks = {t.client_id: t.payload for t in server.configure(1, clients)}
    fast, slow = (Layout.from_config(tasks[c].config) for c in ("f", "s"))
    assert fast.layers == slow.layers == (0, 1, 2)
    assert set(fast.ranks) == {8}
    assert set(slow.ranks) == {2}


def test_aggregate_is_the_exact_weighted_sum_of_scaled_products() -> None:
    server = make_server()
    clients = [ClientInfo("f", 3, props(1.0)), ClientInfo("s", 1, props(4.0))]
    tasks = server.configure(1, clients)
    g = torch.Generator().manual_seed(3)
    results, expected = [], dict.fromkeys(MODULES, torch.zeros(D, D, dtype=torch.float64))
    weights = {"f": 3, "s": 1}
    for t in tasks:
        trained = {
            n: v + 0.1 * torch.randn(v.shape, generator=g) for n, v in t.payload.tensors.items()
        }
        results.append(
            Result(
                t.client_id,
                Payload(tensors=trained, metrics={"num_examples": weights[t.client_id]}),
            )
        )
        for m, (b, a) in split_modules(trained).items():
            rank = a.shape[0]
            product = (ALPHA / rank) * b.double() @ a.double()
            expected[m] = expected[m] + weights[t.client_id] / 4 * product
    assert server.aggregate(1, results, [])["accepted"] == 2
    for m, (b, a) in split_modules(server.global_state().tensors).items():
        # global_rank 16 >= 8 + 2: the exported adapter holds the aggregate exactly.
        got = (ALPHA / a.shape[0]) * b.double() @ a.double()
        assert torch.allclose(got, expected[m], atol=1e-5)
    restored = FlexLoRAServer(server.config, seed=1)
    restored.load_state_dict(server.state_dict())
    again = restored.global_state().tensors
    assert all(torch.equal(again[n], v) for n, v in server.global_state().tensors.items())
