"""The seed servers' round is LinearUpdates' default: checked against the formulas it replaced."""

from __future__ import annotations

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.sampling import client_seed
from fedft.core.strategy import Result
from fedft.strategies.fedkseed import FedKSeedConfig, FedKSeedServer
from fedft.strategies.ferret import FerretConfig, FerretServer
from fedft.strategies.seedpool.pool import step_indices
from fedft.strategies.seedpool.wire import encode_delta

SEEDS, STEPS, BLOCKS = 256, 40, 3


def assert_same_model(got: torch.Tensor, old: torch.Tensor) -> None:
    """Coefficients agree to one float64 ulp, and bit for bit in the fp32 clients receive.

    No shared formula can reproduce the old one's float64 rounding exactly: it scaled the
    weighted sum once by ``-lr / W``, the default divides by ``W`` and ``apply_update`` then
    multiplies by ``lr`` (as under DP, where ``W`` is the expected participant count).
    """
    torch.testing.assert_close(got, old, rtol=2.3e-16, atol=0.0)
    sent, old_sent = encode_delta(got), encode_delta(old)
    assert sent.keys() == old_sent.keys()
    for name, tensor in sent.items():
        assert torch.equal(tensor, old_sent[name]), name


def reply(cid: str, tensors: dict[str, torch.Tensor], n: int) -> Result:
    return Result(cid, Payload(tensors=tensors, metrics={"num_examples": n, "version": 0}))


@pytest.mark.parametrize("seed", range(4))
def test_fedkseed_round_matches_the_old_formula(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    server = FedKSeedServer(FedKSeedConfig(seeds=SEEDS, local_steps=STEPS, lr=3e-4), seed=seed)
    server.initialize(Payload(tensors={"ends": torch.tensor([1000])}))
    counts = [int(c) for c in torch.randint(1, 500, (6,), generator=g)]
    grads = [torch.randn(STEPS, generator=g) * 10.0 ** float(i - 3) for i in range(6)]
    grads[0][::3] = 0.0  # skipped steps
    results = [
        reply(f"c{i}", {"g": gr}, n) for i, (gr, n) in enumerate(zip(grads, counts, strict=True))
    ]
    metrics = server.aggregate(1, [*results, reply("late", {}, 5)], [])

    # The old body: sum g * weight per step at the derived seeds, then scale by -lr / W once.
    summed = torch.zeros(SEEDS, dtype=torch.float64)
    for result, gr, n in zip(results, grads, counts, strict=True):
        index = step_indices(client_seed(seed, 1, result.client_id), STEPS, SEEDS)
        summed.index_add_(0, index, gr.to(torch.float64) * float(n))
    old = summed * (-server.config.lr / sum(counts))
    assert server.store is not None
    assert_same_model(server.store.current[:, 0], old)
    assert metrics["accepted"] == 6
    assert metrics["resyncs"] == 1
    assert metrics["steps"] == sum(int((gr != 0).sum()) for gr in grads)
    assert metrics["seeds_touched"] == int((summed != 0).sum())


@pytest.mark.parametrize("equal_weight", [False, True])
def test_ferret_round_matches_the_old_formula(equal_weight: bool) -> None:
    g = torch.Generator().manual_seed(int(equal_weight))
    config = FerretConfig(seeds=SEEDS, server_lr=0.7, equal_weight=equal_weight)
    server = FerretServer(config, seed=3)
    server.initialize(Payload(tensors={"ends": torch.tensor([100, 250, 400])}))
    counts = [int(c) for c in torch.randint(1, 500, (5,), generator=g)]
    results = []
    for i, n in enumerate(counts):
        flat = torch.randperm(SEEDS * BLOCKS, generator=g)[:60]
        tensors = {
            "i": (flat // BLOCKS).to(torch.int16),
            "b": (flat % BLOCKS).to(torch.int16),
            "c": torch.randn(60, generator=g) * 10.0 ** float(i - 2),
        }
        results.append(reply(f"c{i}", tensors, n))
    metrics = server.aggregate(1, results, [])

    # The old body: sum c * weight per (seed, block), then scale by -server_lr / W once.
    summed = torch.zeros(SEEDS * BLOCKS, dtype=torch.float64)
    weights = [1.0 if equal_weight else float(n) for n in counts]
    for result, weight in zip(results, weights, strict=True):
        t = result.payload.tensors
        flat = t["i"].to(torch.int64) * BLOCKS + t["b"].to(torch.int64)
        summed.index_add_(0, flat, t["c"].to(torch.float64) * weight)
    old = summed.reshape(SEEDS, BLOCKS) * (-config.server_lr / sum(weights))
    assert server.store is not None
    assert_same_model(server.store.current, old)
    assert (metrics["accepted"], metrics["resyncs"]) == (5, 0)
    assert metrics["bases"] == int((summed != 0).sum())
