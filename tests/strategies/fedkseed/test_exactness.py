"""FedKSeed's global model is the weighted mean of the local models, and deltas catch up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.fedkseed import FedKSeedClient, FedKSeedConfig, FedKSeedServer
from fedft.strategies.seedpool import kept_weights
from fedft.strategies.seedpool.trainable import flat_trainable

CONFIG = FedKSeedConfig(seeds=64, local_steps=6, batch_size=2, lr=2e-4, eps=1e-3)


def examples(n: int, tag: str) -> list[Example]:
    return [Example(f"{tag} question {i}?", f"{tag} answer {i}.") for i in range(n)]


def hop(payload: Payload) -> Payload:
    return payload_from_bytes(payload_to_bytes(payload))


def weights(trainer: LocalTrainer) -> torch.Tensor:
    return flat_trainable(trainer.model, CONFIG.trainable).snapshot()


class Federation:
    """Clients that share one model (as in simulation) and a server, driven round by round."""

    def __init__(self, bundle: ModelBundle, sizes: dict[str, int]):
        self.client = FedKSeedClient(CONFIG)
        self.server = FedKSeedServer(CONFIG, seed=5)
        self.trainers = {
            c: LocalTrainer(bundle, examples(n, c), max_length=32) for c, n in sizes.items()
        }
        self.states = {c: Payload() for c in sizes}
        for trainer in self.trainers.values():
            self.client.prepare(trainer)
        first = next(iter(self.trainers.values()))
        self.server.initialize(self.client.initial_state(first))

    def round(self, number: int, who: list[str]) -> dict[str, torch.Tensor]:
        """Run one round with ``who``; return each participant's local model after training."""
        infos = [ClientInfo(c, self.trainers[c].num_examples) for c in who]
        local_models, results = {}, []
        for task in self.server.configure(number, infos):
            trainer = self.trainers[task.client_id]
            reply = self.client.run(hop(task.payload), self.states[task.client_id], trainer)
            local_models[task.client_id] = weights(trainer)
            results.append(Result(task.client_id, hop(reply)))
        metrics = self.server.aggregate(number, results, [])
        assert metrics["accepted"] == len(who)
        return local_models


def global_model(fed: Federation, bundle: ModelBundle) -> torch.Tensor:
    """Rebuild the global model from w0 on a fresh copy of the model."""
    evaluator = LocalTrainer(bundle, [], max_length=32)
    fed.client.prepare(evaluator)
    fed.client.load_global(hop(fed.server.global_state()), evaluator)
    return weights(evaluator)


@pytest.mark.parametrize("kept", ["memory", "disk"])
def test_global_model_is_the_example_weighted_mean_of_local_models(
    tiny_bundle: Callable[[], ModelBundle],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kept: str,
) -> None:
    if kept == "disk":  # the synced weights wait in a file during the steps, as on SmolLM2
        monkeypatch.setattr(kept_weights, "DISK_MIN_VALUES", 0)
        monkeypatch.setenv("FEDFT_CACHE", str(tmp_path))
    sizes = {"a": 3, "b": 5, "c": 8}
    fed = Federation(tiny_bundle(), sizes)
    for number in (1, 2):
        local = fed.round(number, list(sizes))
        total = sum(sizes.values())
        expected = sum(local[c].double() * (sizes[c] / total) for c in sizes)
        assert isinstance(expected, torch.Tensor)
        actual = global_model(fed, tiny_bundle())
        moved = (actual - weights(LocalTrainer(tiny_bundle(), [], max_length=32))).abs().max()
        assert float(moved) > 1e-5  # the round really changed the model
        assert float((actual.double() - expected).abs().max()) <= 1e-6
    if kept == "disk":
        assert (tmp_path / "scratch").is_dir()
        assert not list((tmp_path / "scratch").iterdir())  # nothing left behind


def test_client_that_skipped_three_rounds_catches_up_from_deltas(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    shared = tiny_bundle()
    sizes = {"a": 4, "b": 6}
    fed = Federation(shared, sizes)
    # The late client has its own model: after round 2 it holds its own local model.
    late_bundle = tiny_bundle()
    late = LocalTrainer(late_bundle, examples(5, "late"), max_length=32)
    fed.client.prepare(late)
    fed.trainers["late"], fed.states["late"] = late, Payload()
    fed.round(1, ["a", "b", "late"])
    fed.round(2, ["a", "b", "late"])  # trained from version 1, which it now holds
    for number in (3, 4, 5):
        fed.round(number, ["a", "b"])
    task = fed.server.configure(6, [ClientInfo("late", 5)])[0].payload
    assert (task.config["base"], task.config["target"]) == (1, 5)
    # Sync only (no local steps): what the client does before it trains.
    params, geometry = fed.client.geometry(late)
    from fedft.strategies.seedpool.replay import move_model, receive

    version, target = receive(hop(task), fed.states["late"], geometry)
    move_model(late.model, params, geometry, target)
    assert version == 5
    expected = global_model(fed, tiny_bundle())
    assert float((weights(late) - expected).abs().max()) <= 1e-6


def test_client_without_its_versions_asks_for_and_gets_a_full_sync(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    fed = Federation(tiny_bundle(), {"a": 4})
    fed.round(1, ["a"])
    fed.round(2, ["a"])
    fed.states["a"] = Payload()  # the client lost its state folder
    task = fed.server.configure(3, [ClientInfo("a", 4)])[0]
    assert task.payload.config["base"] == 1  # the version round 2 trained from
    reply = fed.client.run(hop(task.payload), fed.states["a"], fed.trainers["a"])
    assert not reply.tensors
    assert reply.metrics["version"] == 0
    metrics = fed.server.aggregate(3, [Result("a", hop(reply))], [])
    assert metrics["resyncs"] == 1
    assert metrics["accepted"] == 0
    again = fed.server.configure(4, [ClientInfo("a", 4)])[0]
    assert again.payload.config["base"] == 0  # everything, from the pretrained model


def test_server_state_survives_a_checkpoint(tiny_bundle: Callable[[], ModelBundle]) -> None:
    fed = Federation(tiny_bundle(), {"a": 4, "b": 4})
    fed.round(1, ["a", "b"])
    restored = FedKSeedServer(CONFIG, seed=5)
    restored.load_state_dict(hop(fed.server.state_dict()))
    infos = [ClientInfo("a", 4), ClientInfo("b", 4)]
    for mine, theirs in zip(
        fed.server.configure(2, infos), restored.configure(2, infos), strict=True
    ):
        assert payload_to_bytes(mine.payload) == payload_to_bytes(theirs.payload)
