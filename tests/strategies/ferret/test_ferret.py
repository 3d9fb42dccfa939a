"""Ferret on a real tiny Llama: a round applies the mean reconstruction; bad updates are refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.ferret import FerretClient, FerretConfig, FerretServer
from fedft.strategies.seedpool.replay import apply_coefficients_
from fedft.strategies.seedpool.trainable import flat_trainable

CONFIG = FerretConfig(seeds=16, local_steps=2, batch_size=2, lr=1e-3, server_lr=1.0)


def hop(payload: Payload) -> Payload:
    return payload_from_bytes(payload_to_bytes(payload))


def trainer_for(bundle: ModelBundle, n: int, tag: str) -> LocalTrainer:
    data = [Example(f"{tag} question {i}?", f"{tag} answer {i}.") for i in range(n)]
    return LocalTrainer(bundle, data, max_length=32)


def test_round_applies_the_weighted_mean_of_reconstructions(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    client, server = FerretClient(CONFIG), FerretServer(CONFIG, seed=1)
    bundle = tiny_bundle()
    sizes = {"a": 3, "b": 6}
    trainers = {c: trainer_for(bundle, n, c) for c, n in sizes.items()}
    for trainer in trainers.values():
        client.prepare(trainer)
    server.initialize(client.initial_state(trainers["a"]))
    params, geometry = client.geometry(trainers["a"])
    w0 = params.snapshot()

    tasks = server.configure(1, [ClientInfo(c, n) for c, n in sizes.items()])
    results = []
    for task in tasks:
        trainer = trainers[task.client_id]
        reply = hop(client.run(hop(task.payload), Payload(), trainer))
        # Local training is undone: the shared model is back at the global version.
        assert torch.equal(params.snapshot(), w0)
        assert reply.tensors["c"].numel() > 0
        results.append(Result(task.client_id, reply))
    assert server.aggregate(1, results, [])["accepted"] == 2

    # Expected: w0 - mean_c(weight_c * sum_k c_k z_k), rebuilt here from the uplinks.
    expected = flat_trainable(tiny_bundle().model, "all")
    total = sum(sizes.values())
    for result in results:
        t = result.payload.tensors
        coeffs = torch.zeros(geometry.shape, dtype=torch.float64)
        coeffs[t["i"].long(), t["b"].long()] = t["c"].double()
        apply_coefficients_(expected, geometry, coeffs, scale=-sizes[result.client_id] / total)
    evaluator = trainer_for(tiny_bundle(), 0, "eval")
    client.prepare(evaluator)
    client.load_global(hop(server.global_state()), evaluator)
    actual = flat_trainable(evaluator.model, "all").snapshot()
    assert float((actual - w0).abs().max()) > 1e-4
    assert float((actual - expected.snapshot()).abs().max()) <= 1e-6


def test_update_is_a_few_kilobytes_and_the_block_allocation_follows_norms(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    client, server = FerretClient(CONFIG), FerretServer(CONFIG, seed=1)
    trainer = trainer_for(tiny_bundle(), 8, "a")
    client.prepare(trainer)
    server.initialize(client.initial_state(trainer))
    task = server.configure(1, [ClientInfo("a", 8)])[0]
    reply = client.run(hop(task.payload), Payload(), trainer)
    blocks = reply.tensors["b"].long()
    per_block = torch.bincount(blocks)
    assert int(per_block.max()) == CONFIG.seeds  # the largest-norm block gets all K bases
    assert int(per_block[per_block > 0].min()) >= 2
    assert len(payload_to_bytes(reply)) < 8 * int(blocks.numel()) + 400


def make_result(i: list[int], b: list[int], c: list[float], version: int = 0) -> Result:
    return Result(
        "a",
        Payload(
            tensors={
                "i": torch.tensor(i, dtype=torch.int16),
                "b": torch.tensor(b, dtype=torch.int16),
                "c": torch.tensor(c, dtype=torch.float32),
            },
            metrics={"num_examples": 4, "version": version},
        ),
    )


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (make_result([0], [0], [float("nan")]), "NaN"),
        (make_result([16], [0], [1.0]), "outside"),
        (make_result([0], [99], [1.0]), "outside"),
        (make_result([1, 1], [0, 0], [1.0, 2.0]), "twice"),
        (make_result([0], [0], [1.0], version=7), "unknown"),
        (make_result([0, 1], [0], [1.0, 2.0]), "one entry per"),
    ],
)
def test_malformed_updates_are_refused(result: Result, reason: str) -> None:
    server = FerretServer(CONFIG, seed=1)
    server.initialize(Payload(tensors={"ends": torch.tensor([10, 20, 30])}))
    problem = server.check_update(1, result)
    assert problem is not None
    assert reason in problem
    assert server.check_update(1, make_result([0, 3], [0, 2], [1.0, 2.0])) is None


def test_module_block_order_follows_the_models_module_order(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    bundle = tiny_bundle()
    client = FerretClient(CONFIG.replace(block_order="module"))
    trainer = trainer_for(bundle, 3, "a")
    client.prepare(trainer)
    params, geometry = client.geometry(trainer)
    by_offset = {entry.offset: entry for entry in params.layout}
    walked: list[str] = []
    for spans in geometry.all_spans():
        for start, end in spans:
            at = start
            while at < end:
                walked.append(by_offset[at].name)
                at += by_offset[at].numel
    module_order = [n for n, _ in bundle.model.named_parameters()]
    assert walked == module_order
    assert walked != sorted(walked)  # the name-sorted default groups them differently
    assert geometry.ends[-1] == params.total
    name_geometry = FerretClient(CONFIG).geometry(trainer)[1]
    # Norm weights sit between the projections in module order, so small tensors group apart.
    assert name_geometry.spans == ()
    assert name_geometry.ends != geometry.ends


def test_module_block_order_round_trips(tiny_bundle: Callable[[], ModelBundle]) -> None:
    config = CONFIG.replace(block_order="module", equal_weight=True, max_grad_norm=None)
    client, server = FerretClient(config), FerretServer(config, seed=1)
    bundle = tiny_bundle()
    trainer = trainer_for(bundle, 4, "a")
    client.prepare(trainer)
    server.initialize(client.initial_state(trainer))
    (task,) = server.configure(1, [ClientInfo("a", 4)])
    reply = hop(client.run(hop(task.payload), Payload(), trainer))
    assert server.aggregate(1, [Result("a", reply)], [])["accepted"] == 1
    params, geometry = client.geometry(trainer)
    w0 = params.snapshot()
    client.load_global(server.global_state(), trainer)
    moved = params.snapshot() - w0
    # The replay touches exactly the blocks the client projected onto, nothing outside them.
    touched = set(reply.tensors["b"].tolist())
    for block in range(len(geometry.ends)):
        part = torch.cat([moved[s:e] for s, e in geometry.block_spans(block)])
        assert bool(part.abs().sum() > 0) == (block in touched)


def test_server_lr_schedules() -> None:
    linear = CONFIG.replace(server_lr=10.0, server_lr_schedule="linear", schedule_rounds=4)
    assert [linear.server_lr_at(r) for r in (1, 3, 5, 9)] == [10.0, 5.0, 0.0, 0.0]
    cosine = linear.replace(server_lr_schedule="cosine")
    assert cosine.server_lr_at(1) == 10.0
    assert cosine.server_lr_at(3) == pytest.approx(5.0)
    assert CONFIG.server_lr_at(7) == CONFIG.server_lr


def test_basis_clip_caps_each_reconstructed_vector(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    config = CONFIG.replace(lr=1.0, optimizer="sgd", max_grad_norm=None, basis_clip=1e-3)
    client, server = FerretClient(config), FerretServer(config, seed=1)
    trainer = trainer_for(tiny_bundle(), 4, "a")
    client.prepare(trainer)
    server.initialize(client.initial_state(trainer))
    (task,) = server.configure(1, [ClientInfo("a", 4)])
    reply = hop(client.run(hop(task.payload), Payload(), trainer))
    metrics = server.aggregate(1, [Result("a", reply)], [])
    assert int(metrics["clipped_bases"]) > 0
    sizes = server.block_sizes
    assert sizes is not None
    coeffs = server.global_state().tensors["coeffs"]
    norms = coeffs.abs() * sizes.to(torch.float64).sqrt()
    assert float(norms.max()) <= 1e-3 * (1 + 1e-9)
    restored = FerretServer(config, seed=1)
    restored.load_state_dict(server.state_dict())
    assert restored.block_sizes is not None
    assert torch.equal(restored.block_sizes, sizes)


def test_exact_coefficients_round(tiny_bundle: Callable[[], ModelBundle]) -> None:
    config = CONFIG.replace(coefficients="exact", block_order="module")
    client, server = FerretClient(config), FerretServer(config, seed=1)
    trainer = trainer_for(tiny_bundle(), 4, "a")
    client.prepare(trainer)
    server.initialize(client.initial_state(trainer))
    (task,) = server.configure(1, [ClientInfo("a", 4)])
    reply = hop(client.run(hop(task.payload), Payload(), trainer))
    assert reply.tensors["c"].numel() > 0
    assert server.aggregate(1, [Result("a", reply)], [])["accepted"] == 1
