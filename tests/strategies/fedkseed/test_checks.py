"""FedKSeed and FedKSeed-Pro refuse malformed step lists and learn seed importance."""

from __future__ import annotations

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.strategy import ClientInfo, Result
from fedft.strategies.fedkseed import FedKSeedConfig, FedKSeedServer
from fedft.strategies.fedkseed_pro import FedKSeedProConfig, FedKSeedProServer

STEPS = 4


def server() -> FedKSeedServer:
    s = FedKSeedServer(FedKSeedConfig(seeds=8, local_steps=STEPS), seed=0)
    s.initialize(Payload(tensors={"ends": torch.tensor([100])}))
    return s


def result(tensors: dict[str, torch.Tensor], **metrics: int) -> Result:
    return Result(
        "a", Payload(tensors=tensors, metrics={"num_examples": 3, "version": 0, **metrics})
    )


@pytest.mark.parametrize(
    ("tensors", "reason"),
    [
        ({"g": torch.zeros(STEPS + 1)}, "shape"),
        ({"g": torch.zeros(STEPS, dtype=torch.float64)}, "float32"),
        ({"g": torch.tensor([0.0, float("inf"), 0.0, 0.0])}, "NaN or Inf"),
        ({"g": torch.zeros(STEPS), "x": torch.zeros(1)}, "expected tensors"),
    ],
)
def test_fedkseed_refuses_malformed_steps(tensors: dict[str, torch.Tensor], reason: str) -> None:
    problem = server().check_update(1, result(tensors))
    assert problem is not None
    assert reason in problem


def test_fedkseed_refuses_unknown_versions_and_missing_weights() -> None:
    s = server()
    good = {"g": torch.ones(STEPS)}
    assert s.check_update(1, result(good)) is None
    assert "unknown" in (s.check_update(1, result(good, version=3)) or "")
    bad_weight = Result("a", Payload(tensors=good, metrics={"num_examples": 0, "version": 0}))
    assert "num_examples" in (s.check_update(1, bad_weight) or "")


def test_aggregate_adds_minus_lr_times_weighted_g_at_the_derived_seeds() -> None:
    s = server()
    grads = torch.tensor([1.0, -2.0, 0.0, 4.0])
    metrics = s.aggregate(1, [result({"g": grads})], [])
    assert metrics["accepted"] == 1
    assert metrics["steps"] == 3
    assert s.store is not None
    from fedft.core.sampling import client_seed
    from fedft.strategies.seedpool.pool import step_indices

    expected = torch.zeros(8, dtype=torch.float64)
    expected.index_add_(0, step_indices(client_seed(0, 1, "a"), STEPS, 8), grads.double())
    torch.testing.assert_close(s.store.current[:, 0], expected * -s.config.lr)


def test_pro_levels_rise_for_seeds_with_large_gradients() -> None:
    s = FedKSeedProServer(FedKSeedProConfig(seeds=8, local_steps=STEPS), seed=0)
    s.initialize(Payload(tensors={"ends": torch.tensor([100])}))
    uniform = s.configure(1, [ClientInfo("a", 3)])[0].payload.tensors["p"]
    assert uniform.dtype == torch.uint8
    assert uniform.unique().numel() == 1
    update = {
        "i": torch.tensor([2, 2, 5, 6], dtype=torch.int16),
        "g": torch.tensor([9.0, -9.0, 1.0, 0.0]),
    }
    assert s.aggregate(1, [result(update)], [])["accepted"] == 1
    levels = s.configure(2, [ClientInfo("a", 3)])[0].payload.tensors["p"]
    assert int(levels[2]) == 255
    assert int(levels[5]) > 0
    assert int(levels[6]) == 0  # a skipped step (g = 0) is not evidence about its seed
    restored = FedKSeedProServer(FedKSeedProConfig(seeds=8, local_steps=STEPS), seed=0)
    restored.load_state_dict(s.state_dict())
    assert torch.equal(restored.configure(2, [ClientInfo("a", 3)])[0].payload.tensors["p"], levels)


@pytest.mark.parametrize("server_cls", [FedKSeedServer, FedKSeedProServer])
def test_equal_weight_counts_every_client_the_same(server_cls: type[FedKSeedServer]) -> None:
    config_cls = FedKSeedProConfig if server_cls is FedKSeedProServer else FedKSeedConfig
    by_examples = server_cls(config_cls(seeds=8, local_steps=STEPS), seed=0)
    equal = server_cls(config_cls(seeds=8, local_steps=STEPS, equal_weight=True), seed=0)
    update = result({})
    assert by_examples.update_weight(update) == 3.0
    assert equal.update_weight(update) == 1.0
