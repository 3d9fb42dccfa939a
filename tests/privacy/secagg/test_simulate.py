"""The in-process adapter: exact and float sums, bytes per client and stage, CPU counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, LinearUpdates, Result
from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.simulate import STAGES, secure_sum
from fedft.strategies.fedavg_lora import FedAvgLoRAConfig, FedAvgLoRAServer
from fedft.strategies.fedkseed import FedKSeedConfig, FedKSeedServer
from fedft.strategies.fedkseed_pro import FedKSeedProConfig, FedKSeedProServer
from fedft.strategies.ferret import FerretConfig, FerretServer


def test_integer_vectors_sum_exactly() -> None:
    rng = np.random.default_rng(3)
    xs = [rng.integers(-2, 3, size=32).astype(np.float64) for _ in range(10)]
    ws = [float(w) for w in rng.integers(1, 9, size=10)]
    total, st = secure_sum(xs, ws, encoding=Encoding(32, 12, 2.0, 8.0))
    assert np.array_equal(total, np.sum([w * x for w, x in zip(ws, xs, strict=True)], axis=0))
    assert st.total_weight == sum(ws)
    assert st.survivors == tuple(range(10))


def test_float_update_vectors_sum_to_the_encoding_precision() -> None:
    # Update vectors as LinearUpdates.update_vector returns them: float64 torch tensors.
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(200, generator=gen, dtype=torch.float64) * 0.3 for _ in range(12)]
    ws = [float(n) for n in range(1, 13)]
    total, st = secure_sum(xs, ws, seed=7)
    enc = st.config.encoding
    assert enc.frac_bits >= 20  # Encoding.fit leaves only the headroom 12 clients need
    plain = np.sum([w * np.clip(x.numpy(), -1, 1) for w, x in zip(ws, xs, strict=True)], axis=0)
    assert np.max(np.abs(total - plain)) <= 12 / enc.scale
    mean = total / st.total_weight
    assert np.allclose(mean, plain / sum(ws), atol=1e-4)


def test_bytes_are_counted_per_client_and_stage_and_grow_with_the_degree_only() -> None:
    length = 100
    xs = [np.zeros(length) for _ in range(32)]
    _, small = secure_sum(xs[:16], neighbours=6)
    _, large = secure_sum(xs, neighbours=6)
    for stage in STAGES:
        assert small.sent[(0, stage)] > 0
        # What starts a stage: none for advertise (the config is public), then the relays.
        assert ((0, stage) in small.received) == (stage != "advertise")
    assert small.sent[(0, "mask")] == 8 + 4 * (length + 1)
    # Same degree, twice the clients: the same traffic per client (O(k), not O(n)).
    assert small.client_bytes(0) == large.client_bytes(0)
    assert all(cpu > 0 for cpu in large.client_cpu.values())
    assert large.server_cpu > 0


def _strategy(name: str) -> LinearUpdates[Any]:
    if name == "fedavg_lora":
        return FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1)
    if name == "fedkseed":
        return FedKSeedServer(FedKSeedConfig(seeds=8, local_steps=6, lr=0.01), seed=2)
    if name == "fedkseed_pro":
        return FedKSeedProServer(FedKSeedProConfig(seeds=8, local_steps=6, lr=0.01), seed=2)
    return FerretServer(FerretConfig(seeds=8), seed=2)


def _initial_and_results(name: str, n: int) -> tuple[Payload, list[Result]]:
    g = torch.Generator().manual_seed(5)
    if name == "fedavg_lora":
        base = {"m.lora_A": torch.zeros(4, 8), "m.lora_B": torch.zeros(8, 4)}
        made = [
            {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in base.items()} for _ in range(n)
        ]
        return Payload(tensors=base), [
            Result(f"c{i}", Payload(tensors=t, metrics={"num_examples": 3 + i}))
            for i, t in enumerate(made)
        ]
    ends = torch.tensor([10, 20] if name == "ferret" else [20])
    out = []
    for i in range(n):
        if name == "ferret":
            tensors = {
                "i": torch.tensor([0, 3, 5], dtype=torch.int16),
                "b": torch.tensor([0, 1, 1], dtype=torch.int16),
                "c": torch.randn(3, generator=g),
            }
        else:
            tensors = {"g": torch.randn(6, generator=g)}
            if name == "fedkseed_pro":  # it samples its seeds, so it names them
                tensors["i"] = torch.randint(0, 8, (6,), generator=g, dtype=torch.int16)
        metrics: dict[str, MetricValue] = {"num_examples": 3 + i, "version": 0}
        out.append(Result(f"c{i}", Payload(tensors=tensors, metrics=metrics)))
    return Payload(tensors={"ends": ends}), out


@pytest.mark.parametrize("name", ["fedavg_lora", "fedkseed", "fedkseed_pro", "ferret"])
def test_any_linear_updates_strategy_gets_its_own_mean_through_secagg(name: str) -> None:
    n = 5
    initial, results = _initial_and_results(name, n)
    plain, secure = _strategy(name), _strategy(name)
    for server in (plain, secure):
        server.initialize(initial)
        server.configure(1, [ClientInfo(f"c{i}", 10) for i in range(n)])
    plain.aggregate(1, results, [])
    # The host's job, with no strategy-specific code: vectors and weights in, mean out.
    vectors = [secure.update_vector(1, r) for r in results]
    weights = [secure.update_weight(r) for r in results]
    enc = Encoding.fit(n, clip=8.0, max_weight=16.0)
    total, st = secure_sum(vectors, weights, encoding=enc, seed=0)
    secure.apply_update(1, torch.from_numpy(total / st.total_weight))
    for key, want in plain.global_state().tensors.items():
        got = secure.global_state().tensors[key]
        assert torch.allclose(got.double(), want.double(), atol=1e-5), key
