"""The host-neutral glue: device inputs, server-fixed weights, applying a decoded secure sum."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch

from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.strategy import ClientInfo, ClientStrategy, Result
from fedft.core.trainer import Trainer
from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.linear import (
    HAS_UPDATE,
    apply_sum,
    device_input,
    public_problem,
    round_encoding,
    secagg_problem,
    task_weights,
)
from fedft.privacy.secagg.settings import SecAggSettings, secagg_refusal
from fedft.privacy.secagg.simulate import secure_sum
from fedft.strategies.fedavg_lora import FedAvgLoRAClient, FedAvgLoRAConfig, FedAvgLoRAServer
from fedft.strategies.fedkseed import FedKSeedConfig, FedKSeedServer
from fedft.strategies.legend import LegendConfig, LegendServer

NO_TRAINER = cast(Trainer, None)  # fedavg_lora measures its vector from task and reply alone


def adapter(seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "m.lora_A": torch.randn(2, 6, generator=g) * scale,
        "m.lora_B": torch.randn(6, 2, generator=g) * scale,
    }


def reply(seed: int, base: dict[str, torch.Tensor], examples: int = 5) -> Payload:
    delta = adapter(seed)
    return Payload(
        tensors={k: base[k] + delta[k] for k in base},
        metrics={"num_examples": examples, "train_loss": 2.5, "steps": 3, "lora_depth": 1},
    )


def test_the_device_keeps_its_vector_and_its_loss() -> None:
    base = adapter(0)
    client = FedAvgLoRAClient(FedAvgLoRAConfig())
    entry = device_input(client, Payload(tensors=base), reply(1, base), NO_TRAINER, clip=1.0)
    assert entry.vector is not None
    assert entry.vector.shape == (24,)
    assert entry.public.tensors == {}
    assert entry.public.metrics == {"num_examples": 5, "lora_depth": 1, HAS_UPDATE: 1}
    assert entry.clipped == 0
    tight = device_input(client, Payload(tensors=base), reply(1, base), NO_TRAINER, clip=1e-3)
    assert tight.clipped == int(np.count_nonzero(np.abs(entry.vector) > 1e-3)) > 0


def test_a_non_finite_update_goes_in_as_none() -> None:
    base = adapter(0)
    bad = reply(1, base)
    bad.tensors["m.lora_A"][0, 0] = float("nan")
    client = FedAvgLoRAClient(FedAvgLoRAConfig())
    entry = device_input(client, Payload(tensors=base), bad, NO_TRAINER, clip=1.0)
    assert entry.vector is None
    assert entry.public.metrics[HAS_UPDATE] == 0


def test_weights_are_fixed_by_the_server_and_scaled_to_one() -> None:
    server = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0)
    clients = [ClientInfo("a", 10), ClientInfo("b", 40), ClientInfo("c", 20)]
    assert task_weights(server, clients) == {"a": 0.25, "b": 1.0, "c": 0.5}
    equal = FedKSeedServer(FedKSeedConfig(equal_weight=True), seed=0)
    assert set(task_weights(equal, clients).values()) == {1.0}


def test_the_decoded_sum_applies_the_plain_weighted_mean() -> None:
    base = adapter(0)
    counts = [3, 7, 5, 9, 4]
    plain = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0)
    secure = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0)
    infos = [ClientInfo(f"c{i}", n) for i, n in enumerate(counts)]
    for server in (plain, secure):
        server.initialize(Payload(tensors=base))
        server.configure(1, infos)
    replies = [reply(10 + i, base, n) for i, n in enumerate(counts)]
    plain.aggregate(1, [Result(f"c{i}", r) for i, r in enumerate(replies)], [])

    client = FedAvgLoRAClient(FedAvgLoRAConfig())
    weights = task_weights(secure, infos)
    inputs = [device_input(client, Payload(tensors=base), r, NO_TRAINER, 1.0) for r in replies]
    encoding = round_encoding(SecAggSettings(), secure, len(inputs))
    total, stats = secure_sum(
        [e.vector for e in inputs],
        [weights[f"c{i}"] for i in range(len(inputs))],
        encoding=encoding,
        seed=1,
    )
    publics = [Result(f"c{i}", e.public) for i, e in enumerate(inputs)]
    metrics = apply_sum(
        secure, 1, publics, total, stats.total_weight, failures=[], encoding=encoding
    )
    assert metrics["accepted"] == metrics["secagg_survivors"] == 5
    for name, t in plain.global_state().tensors.items():
        got = secure.global_state().tensors[name]
        assert float((got - t).abs().max()) <= 2 * 2.0**-encoding.frac_bits + 1e-8


def test_bookkeeping_comes_from_the_public_part() -> None:
    server = FedKSeedServer(FedKSeedConfig(seeds=16, local_steps=2), seed=0)
    server.initialize(Payload(tensors={"ends": torch.tensor([10])}))
    server.apply_update(1, torch.ones(16))
    public = Result("c0", Payload(metrics={"num_examples": 3, "version": 1, HAS_UPDATE: 0}))
    apply_sum(server, 2, [public], np.zeros(16), 0.0, failures=[], encoding=Encoding())
    assert server.store is not None
    assert server.store.synced == {"c0": 1}


@pytest.mark.parametrize(
    ("metrics", "tensors", "message"),
    [
        ({"num_examples": 0, HAS_UPDATE: 1}, {}, "num_examples"),
        ({"num_examples": 2, HAS_UPDATE: 5}, {}, HAS_UPDATE),
        ({"num_examples": 2, HAS_UPDATE: 1}, {"x": torch.zeros(1)}, "no tensor"),
    ],
)
def test_malformed_public_parts_are_refused(
    metrics: dict[str, Any], tensors: dict[str, torch.Tensor], message: str
) -> None:
    problem = public_problem(Result("c", Payload(tensors=tensors, metrics=metrics)))
    assert problem is not None
    assert message in problem
    assert public_problem(Result("c", Payload(metrics={"num_examples": 2, HAS_UPDATE: 0}))) is None


class _NoVectors(ClientStrategy[Any]):
    prepare = initial_state = run = load_global = FedAvgLoRAClient.prepare  # never called


def test_strategies_that_cannot_are_named() -> None:
    legend = LegendServer(LegendConfig(), seed=0)
    assert "per-device shapes" in (secagg_problem(legend, name="legend") or "")
    lora = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0)
    assert secagg_problem(lora, FedAvgLoRAClient(FedAvgLoRAConfig()), name="x") is None
    no_vectors = _NoVectors(FedAvgLoRAConfig())
    assert "does not compute" in (secagg_problem(lora, no_vectors, name="x") or "")


def test_settings_are_checked() -> None:
    assert SecAggSettings(neighbours=4, threshold=3).threshold == 3
    for bad in ({"neighbours": 1}, {"threshold": -1}, {"clip": float("inf")}, {"ring_bits": 8}):
        with pytest.raises(UsageError):
            SecAggSettings(**bad)
    assert secagg_refusal(dp=False, robust=False, participation="none") is None
    assert "choose one" in (secagg_refusal(dp=False, robust=True, participation="none") or "")


def test_under_dp_the_device_clips_its_own_update() -> None:
    base = adapter(0)
    client = FedAvgLoRAClient(FedAvgLoRAConfig())
    big = Payload(tensors={k: v + 1.0 for k, v in base.items()}, metrics={"num_examples": 4})
    entry = device_input(client, Payload(tensors=base), big, NO_TRAINER, 1.0, l2_clip=0.5)
    assert entry.vector is not None
    assert float(np.linalg.norm(entry.vector)) == pytest.approx(0.5)
    small = device_input(
        client, Payload(tensors=base), reply(1, base), NO_TRAINER, 1.0, l2_clip=50.0
    )
    plain = device_input(client, Payload(tensors=base), reply(1, base), NO_TRAINER, 1.0)
    assert small.vector is not None
    assert plain.vector is not None
    np.testing.assert_array_equal(small.vector, plain.vector)  # within the norm: untouched
    server = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0)
    clients = [ClientInfo("a", 10), ClientInfo("b", 40)]
    assert task_weights(server, clients, equal=True) == {"a": 1.0, "b": 1.0}
    # The DP clip bounds every value: the encoding's clip follows it.
    assert round_encoding(SecAggSettings(), server, 4, l2_clip=0.05).clip == 0.05
