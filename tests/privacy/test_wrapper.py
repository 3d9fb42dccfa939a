"""The server-side DP wrapper around real strategy server halves, with synthetic client updates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, Failure, Result, ServerStrategy, Task
from fedft.privacy.config import DPConfig
from fedft.privacy.mechanisms import SecureGaussian
from fedft.privacy.wrapper import DPServer, dp_settings_from_state, inner_state
from fedft.strategies.fedavg_lora import FedAvgLoRAConfig, FedAvgLoRAServer
from fedft.strategies.fedkseed import FedKSeedConfig, FedKSeedServer
from fedft.strategies.ferret import FerretConfig, FerretServer

KEY = bytes(range(32))  # a fixed noise key: reproducible tests, never a real release


def lora_adapter(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "m.lora_A": torch.randn(4, 8, generator=g) * scale,
        "m.lora_B": torch.randn(8, 4, generator=g) * scale,
    }


def clients(n: int) -> list[ClientInfo]:
    return [ClientInfo(f"c{i}", 10) for i in range(n)]


def lora_results(global_adapter: dict[str, torch.Tensor], n: int, scale: float) -> list[Result]:
    out = []
    for i in range(n):
        delta = lora_adapter(100 + i, scale)
        tensors = {k: global_adapter[k] + delta[k] for k in global_adapter}
        out.append(Result(f"c{i}", Payload(tensors=tensors, metrics={"num_examples": 10})))
    return out


def flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors.values()])


def dp(z: float = 0.0, clip: float = 1e9, **kw: Any) -> DPConfig:
    return DPConfig(noise_multiplier=z, clip=clip, **kw)


def test_without_noise_or_clipping_it_is_the_plain_mean() -> None:
    plain = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1)
    wrapped = DPServer(FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), dp(), seed=1)
    for server in (plain, wrapped):
        server.initialize(Payload(tensors=lora_adapter(0)))
        server.configure(1, clients(3))
        server.aggregate(1, lora_results(lora_adapter(0), 3, 0.1), [])
    got, want = flat(wrapped.global_state().tensors), flat(plain.global_state().tensors)
    assert torch.allclose(got, want, atol=1e-6)
    assert wrapped.last_entry is not None
    assert (wrapped.last_entry.participants, wrapped.last_entry.sampling_rate) == (3, 1.0)


def test_updates_are_clipped_to_the_norm() -> None:
    server = DPServer(FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), dp(clip=0.5), seed=1)
    server.initialize(Payload(tensors=lora_adapter(0)))
    server.configure(1, clients(1))
    before = flat(server.global_state().tensors)
    metrics = server.aggregate(1, lora_results(lora_adapter(0), 1, 1.0), [])
    change = flat(server.global_state().tensors) - before
    assert float(torch.linalg.vector_norm(change)) == pytest.approx(0.5, rel=1e-5)
    assert metrics["accepted"] == 1


def test_noise_has_the_calibrated_std() -> None:
    adapter = {"w": torch.zeros(40_000)}
    server = DPServer(
        FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1),
        dp(z=2.0, clip=0.25),
        seed=1,
        noise=SecureGaussian(KEY),
    )
    server.initialize(Payload(tensors=adapter))
    server.configure(1, clients(4))
    zero = [
        Result(f"c{i}", Payload(tensors=dict(adapter), metrics={"num_examples": 5}))
        for i in range(4)
    ]
    server.aggregate(1, zero, [])
    change = server.global_state().tensors["w"].double()
    # std of the noised sum is z * C; the mean divides by the 4 expected participants.
    assert float(change.std()) == pytest.approx(2.0 * 0.25 / 4, rel=0.02)


def _seed_results(server: str, n: int) -> list[Result]:
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        if server == "fedkseed":
            tensors = {"g": torch.randn(6, generator=g)}
        else:
            tensors = {
                "i": torch.tensor([0, 3, 5], dtype=torch.int16),
                "b": torch.tensor([0, 1, 1], dtype=torch.int16),
                "c": torch.randn(3, generator=g),
            }
        out.append(
            Result(f"c{i}", Payload(tensors=tensors, metrics={"num_examples": 7, "version": 0}))
        )
    return out


@pytest.mark.parametrize("name", ["fedkseed", "ferret"])
def test_seed_strategies_match_their_own_mean_with_equal_weights(name: str) -> None:
    def make() -> ServerStrategy[Any]:
        if name == "fedkseed":
            return FedKSeedServer(FedKSeedConfig(seeds=8, local_steps=6, lr=0.01), seed=2)
        return FerretServer(FerretConfig(seeds=8), seed=2)

    initial = Payload(tensors={"ends": torch.tensor([10, 20] if name == "ferret" else [20])})
    plain, wrapped = make(), DPServer(make(), dp(), seed=2)
    for server in (plain, wrapped):
        server.initialize(initial)
        server.configure(1, clients(3))
        server.aggregate(1, _seed_results(name, 3), [])
    got = wrapped.global_state().tensors["coeffs"]
    want = plain.global_state().tensors["coeffs"]
    assert bool((want != 0).any())
    assert torch.allclose(got, want, atol=1e-12)


def test_poisson_sampling_and_refusing_a_subsampling_strategy() -> None:
    server = DPServer(FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), dp(sampling_rate=0.3), seed=1)
    server.initialize(Payload(tensors=lora_adapter(0)))
    counts = [len(server.configure(r, clients(200))) for r in range(1, 6)]
    assert all(40 <= c <= 80 for c in counts)  # Binomial(200, 0.3): mean 60, sd 6.5
    assert len(set(counts)) > 1
    assert server.expected_participants() == pytest.approx(60.0)
    halving = DPServer(FedAvgLoRAServer(FedAvgLoRAConfig(fraction=0.5), seed=1), dp(), seed=1)
    halving.initialize(Payload(tensors=lora_adapter(0)))
    with pytest.raises(UsageError, match="samples the clients"):
        halving.configure(1, clients(10))


def test_adaptive_clip_shrinks_when_every_update_fits() -> None:
    server = DPServer(
        FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), dp(clip=100.0, adaptive=True), seed=1
    )
    server.initialize(Payload(tensors=lora_adapter(0)))
    server.configure(1, clients(4))
    metrics = server.aggregate(1, lora_results(lora_adapter(0), 4, 0.01), [])
    assert metrics["dp.clip"] == 100.0
    assert server.clipper.clip == pytest.approx(100.0 * math.exp(-0.2 * 0.5))


def test_checkpoint_round_trip_keeps_dp_state() -> None:
    config = dp(z=0.5, clip=0.3, canaries=3)
    server = DPServer(FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), config, seed=9)
    server.initialize(Payload(tensors=lora_adapter(0)))
    server.configure(1, clients(2))
    server.aggregate(1, lora_results(lora_adapter(0), 2, 0.1), [])
    state = server.state_dict()
    assert dp_settings_from_state(state) == config
    assert set(inner_state(state).tensors) == set(lora_adapter(0))
    restored = DPServer(FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), config, seed=9)
    restored.load_state_dict(state)
    assert restored.population == 2
    before, after = server.canary_record(), restored.canary_record()
    assert before is not None
    assert after is not None
    assert torch.equal(before.delta, after.delta)
    assert flat(restored.global_state().tensors).equal(flat(server.global_state().tensors))


class _Opaque(ServerStrategy[Any]):
    """A strategy that does not expose update vectors."""

    def initialize(self, initial: Payload) -> None: ...
    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        return []

    def aggregate(
        self, server_round: int, results: Any, failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        return {}

    def global_state(self) -> Payload:
        return Payload()

    def state_dict(self) -> Payload:
        return Payload()

    def load_state_dict(self, state: Payload) -> None: ...


def test_a_strategy_without_update_vectors_is_refused() -> None:
    with pytest.raises(UsageError, match="does not expose"):
        DPServer(_Opaque(FedAvgLoRAConfig(), seed=0), dp(), seed=0)
    # The host passes the registered name, which the user knows better than a class name.
    with pytest.raises(UsageError, match="strategy opaque does not expose"):
        DPServer(_Opaque(FedAvgLoRAConfig(), seed=0), dp(), seed=0, name="opaque")


def test_adaptive_noise_split_is_checked_before_anyone_trains() -> None:
    tight = DPServer(
        FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1), dp(z=1.0, clip=1.0, adaptive=True), seed=1
    )
    tight.initialize(Payload(tensors=lora_adapter(0)))
    with pytest.raises(UsageError, match="dp-count-stddev"):
        tight.configure(1, clients(4))  # 4 expected clients: count noise 0.2, z must be < 0.4
    roomy = DPServer(
        FedAvgLoRAServer(FedAvgLoRAConfig(), seed=1),
        dp(z=1.0, clip=1.0, adaptive=True, count_stddev=2.0),
        seed=1,
    )
    roomy.initialize(Payload(tensors=lora_adapter(0)))
    assert len(roomy.configure(1, clients(4))) == 4
    metrics = roomy.aggregate(1, lora_results(lora_adapter(0), 4, 0.01), [])
    assert metrics["dp.noise_std"] == pytest.approx((1.0 - 0.25**2) ** -0.5, rel=1e-9)
