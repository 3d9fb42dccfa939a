"""The pieces of FedKSeed's weight decay: exempt tensors, step factors, update vectors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.strategy import Result
from fedft.kernels.seed_ops import FlatParams
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.fedkseed import FedKSeedClient, FedKSeedConfig, FedKSeedServer
from fedft.strategies.fedkseed.decay import (
    coefficient_change,
    decay_blocks,
    step_factors,
    update_vector,
)
from fedft.strategies.seedpool.trainable import flat_trainable

DECAY = FedKSeedConfig(seeds=8, local_steps=5, lr=1e-3, weight_decay=4.0)


def test_one_dimensional_tensors_are_exempt_including_llamas_final_norm(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    model = tiny_bundle().model
    params = flat_trainable(model, "all")
    decayed, spared = decay_blocks(params, dict(model.named_parameters()))
    covered: dict[str, bool] = {}
    for entry in params.layout:
        inside = [s for s in (*decayed, *spared) if s[0] <= entry.offset < s[1]]
        assert len(inside) == 1
        covered[entry.name] = inside[0] in spared
    assert covered["model.norm.weight"]  # MeZO's name rule would decay it
    assert covered["model.layers.0.input_layernorm.weight"]
    assert not covered["lm_head.weight"]
    assert not covered["model.embed_tokens.weight"]
    assert all(covered[n] == (p.dim() == 1) for n, p in model.named_parameters())
    assert sum(e - s for s, e in (*decayed, *spared)) == params.total


def test_adjacent_tensors_of_one_kind_share_a_span() -> None:
    named = {"a": torch.zeros(3), "b": torch.zeros(2), "c": torch.zeros(2, 2), "d": torch.zeros(4)}
    params = FlatParams(named)
    assert decay_blocks(params, named) == (((5, 9),), ((0, 5), (9, 13)))


def test_client_geometry_has_a_decayed_and_an_exempt_block(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    trainer = LocalTrainer(tiny_bundle(), [], max_length=32)
    client = FedKSeedClient(DECAY)
    client.prepare(trainer)
    params, geometry = client.geometry(trainer)
    assert geometry.scaled
    assert geometry.shape == (9, 2)
    dims = {n: p.dim() for n, p in trainer.model.named_parameters()}
    spared = sum(p.numel() for p in trainer.model.parameters() if p.dim() == 1)
    assert geometry.ends == (params.total - spared, params.total)
    assert client.initial_state(trainer).tensors["ends"].tolist() == list(geometry.ends)
    assert all(dims[n] == 2 for n in params.layout.names if n.endswith("proj.weight"))


def test_lora_factors_all_decay_in_one_block(tiny_bundle: Callable[[], ModelBundle]) -> None:
    trainer = LocalTrainer(tiny_bundle(), [], max_length=32)
    client = FedKSeedClient(FedKSeedConfig(seeds=8, weight_decay=0.1, trainable="lora"))
    client.prepare(trainer)
    params, geometry = client.geometry(trainer)
    assert geometry.scaled
    assert geometry.shape == (9, 1)
    assert (geometry.ends, geometry.spans) == ((params.total,), ())


@pytest.mark.parametrize("lr_wd", [2e-3, 3e-9])
def test_step_factors_track_the_exact_decay(lr_wd: float) -> None:
    config = FedKSeedConfig(local_steps=400, lr=1e-3, weight_decay=lr_wd / 1e-3)
    rho = 1 - lr_wd
    product = 1.0
    for step, factor in enumerate(step_factors(config)):
        assert factor == float(torch.tensor(factor, dtype=torch.float32))  # one fp32 multiply
        product *= factor
        assert abs(product / rho ** (step + 1) - 1) <= 1.01 * 2**-24
    if lr_wd < 2**-25:  # below fp32's step near 1: most steps need no pass at all
        assert step_factors(config).count(1.0) > 300


def test_update_vector_is_linear_in_g_and_weights_later_steps_more() -> None:
    g1, g2 = torch.tensor([1.0, -2.0, 0.0, 4.0, 0.5]), torch.tensor([0.5, 1.0, 3.0, 0.0, -1.0])
    index = torch.tensor([3, 1, 3, 0, 7])
    for blocks in (1, 2):
        v1, v2 = (update_vector(DECAY, index, g, blocks) for g in (g1, g2))
        assert v1.shape == (8 * blocks,)
        torch.testing.assert_close(update_vector(DECAY, index, 2 * g1 - g2, blocks), 2 * v1 - v2)
    rho = 1 - DECAY.lr * DECAY.weight_decay
    v = update_vector(DECAY, index, g1, 2)
    assert float(v[0]) == pytest.approx(-4.0 * rho)  # step 3 of 5: one later step decays it
    assert float(v[8]) == -4.0  # the exempt half is the plain sum
    plain = update_vector(FedKSeedConfig(seeds=8, local_steps=5), index, g1, 1)
    assert plain.tolist() == [-4.0, 2.0, 0, -1.0, 0, 0, 0, -0.5]


def test_coefficient_change_shrinks_the_scale_and_divides_by_it() -> None:
    vector = torch.arange(16, dtype=torch.float64)
    change = coefficient_change(DECAY, vector, -0.5, 2)
    step = 5 * math.log1p(-DECAY.lr * DECAY.weight_decay)
    assert change.shape == (9, 2)
    assert float(change[8, 0]) == step
    assert float(change[8, 1]) == 0.0
    new_scale = math.exp(-0.5 + step)
    torch.testing.assert_close(change[:8, 0], vector[:8] * DECAY.lr / new_scale)
    torch.testing.assert_close(change[:8, 1], vector[8:] * DECAY.lr)


def test_server_sizes_its_update_by_the_clients_blocks() -> None:
    two = FedKSeedServer(DECAY, seed=0)
    two.initialize(Payload(tensors={"ends": torch.tensor([90, 100])}))
    assert two.update_size() == 16
    assert two.store is not None
    assert two.store.shape == (9, 2)
    one = FedKSeedServer(DECAY, seed=0)
    one.initialize(Payload(tensors={"ends": torch.tensor([100])}))
    assert one.update_size() == 8
    reply = Payload(tensors={"g": torch.ones(5)}, metrics={"num_examples": 2, "version": 0})
    metrics = one.aggregate(1, [Result("a", reply)], [])
    assert metrics["accepted"] == 1
    assert float(one.store.current[8, 0]) < 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="1 or 2 blocks"):
        FedKSeedServer(DECAY, seed=0).initialize(Payload(tensors={"ends": torch.tensor([1, 2, 3])}))
