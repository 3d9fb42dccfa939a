"""FedKSeed's weight decay: MeZO's decayed steps, replayed exactly in the scaled frame."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest
import torch

from fedft.core.config import ConfigError
from fedft.core.payload import Payload
from fedft.core.rng import perturbation
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Result
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.strategies.fedkseed import FedKSeedClient, FedKSeedConfig, FedKSeedServer
from fedft.strategies.fedkseed_pro import (
    FedKSeedProClient,
    FedKSeedProConfig,
    FedKSeedProServer,
)
from fedft.strategies.seedpool.pool import pool_seeds, step_indices
from fedft.strategies.seedpool.replay import move_model, receive
from fedft.strategies.seedpool.trainable import flat_trainable

# lr * wd = 2e-3: ten times the per-round drift of fp32 rounding, so a missed decay shows.
CONFIG = FedKSeedConfig(seeds=256, local_steps=6, batch_size=2, lr=2e-4, eps=1e-3, weight_decay=10)


def examples(n: int, tag: str) -> list[Example]:
    return [Example(f"{tag} question {i}?", f"{tag} answer {i}.") for i in range(n)]


def hop(payload: Payload) -> Payload:
    return payload_from_bytes(payload_to_bytes(payload))


def weights(trainer: LocalTrainer) -> torch.Tensor:
    return flat_trainable(trainer.model, "all").snapshot()


class Federation:
    """Clients that share one model (as in simulation) and a server, driven round by round."""

    def __init__(
        self,
        bundle: ModelBundle,
        sizes: dict[str, int],
        config: FedKSeedConfig = CONFIG,
        *,
        pro: bool = False,
    ):
        self.config = config
        if pro:
            pro_config = FedKSeedProConfig(**asdict(config))
            self.client: FedKSeedClient = FedKSeedProClient(pro_config)
            self.server: FedKSeedServer = FedKSeedProServer(pro_config, seed=5)
        else:
            self.client = FedKSeedClient(config)
            self.server = FedKSeedServer(config, seed=5)
        self.trainers = {
            c: LocalTrainer(bundle, examples(n, c), max_length=32) for c, n in sizes.items()
        }
        self.states = {c: Payload() for c in sizes}
        for trainer in self.trainers.values():
            self.client.prepare(trainer)
        first = next(iter(self.trainers.values()))
        self.server.initialize(self.client.initial_state(first))
        self.replies: dict[str, Payload] = {}
        self.tasks: dict[str, Payload] = {}

    def add(self, name: str, bundle: ModelBundle, n: int) -> None:
        """A client with a model of its own."""
        trainer = LocalTrainer(bundle, examples(n, name), max_length=32)
        self.client.prepare(trainer)
        self.trainers[name], self.states[name] = trainer, Payload()

    def train(self, number: int, who: list[str]) -> tuple[dict[str, torch.Tensor], list[Result]]:
        """Run the clients of round ``number``; return their local models and replies."""
        infos = [ClientInfo(c, self.trainers[c].num_examples) for c in who]
        local_models, results = {}, []
        for task in self.server.configure(number, infos):
            trainer = self.trainers[task.client_id]
            self.tasks[task.client_id] = hop(task.payload)
            reply = self.client.run(
                self.tasks[task.client_id], self.states[task.client_id], trainer
            )
            local_models[task.client_id] = weights(trainer)
            self.replies[task.client_id] = hop(reply)
            results.append(Result(task.client_id, self.replies[task.client_id]))
        return local_models, results

    def round(self, number: int, who: list[str]) -> dict[str, torch.Tensor]:
        """Run one round with ``who``; return each participant's local model after training."""
        local_models, results = self.train(number, who)
        metrics = self.server.aggregate(number, results, [])
        assert metrics["accepted"] == len(who)
        return local_models


def global_model(fed: Federation, bundle: ModelBundle) -> torch.Tensor:
    """Rebuild the global model from w0 on a fresh copy of the model."""
    evaluator = LocalTrainer(bundle, [], max_length=32)
    fed.client.prepare(evaluator)
    fed.client.load_global(hop(fed.server.global_state()), evaluator)
    return weights(evaluator)


def one_dimensional(trainer: LocalTrainer) -> torch.Tensor:
    """A mask of the stream: True on the 1-D tensors (the exempt ones)."""
    params = flat_trainable(trainer.model, "all")
    shapes = dict(trainer.model.named_parameters())
    mask = torch.zeros(params.total, dtype=torch.bool)
    for entry in params.layout:
        mask[entry.offset : entry.offset + entry.numel] = shapes[entry.name].dim() == 1
    return mask


def mezo_round(
    trainer: LocalTrainer,
    start: torch.Tensor,
    task: Payload,
    config: FedKSeedConfig,
    skipped: set[int],
) -> tuple[torch.Tensor, list[float]]:
    """MeZO's decayed steps written out directly in fp32, from ``start``; returns (w, g's).

    Per step: losses at w +- eps z, g = (l+ - l-) / 2eps, then w - lr (g z + wd w) on the
    decayed tensors and w - lr g z on 1-D ones. A skipped step is one with g = 0.
    """
    params = flat_trainable(trainer.model, "all")
    params.restore(start)
    views = dict(zip(params.layout.names, params.flat, strict=True))
    spared = {n for n, p in trainer.model.named_parameters() if p.dim() == 1}
    seed = int(task.config["seed"])  # type: ignore[arg-type]
    seeds = pool_seeds(config.pool_seed, config.seeds)
    batches = trainer.batches(batch_size=config.batch_size, seed=seed)
    grads: list[float] = []
    for t, index in enumerate(step_indices(seed, config.local_steps, config.seeds).tolist()):
        z = perturbation(seeds[index], 0, params.total, config.kind)
        parts = {e.name: z[e.offset : e.offset + e.numel] for e in params.layout}

        def shift(scale: float, parts: dict[str, torch.Tensor] = parts) -> None:
            for name, view in views.items():
                view.add_(parts[name] * scale)

        batch: Any = next(batches)
        shift(config.eps)
        plus = trainer.loss(batch)
        shift(-2 * config.eps)
        minus = trainer.loss(batch)
        shift(config.eps)
        g = 0.0 if t in skipped else float(torch.tensor((plus - minus) / (2 * config.eps)))
        grads.append(g)
        for name, view in views.items():
            if name in spared:
                view.copy_(view - config.lr * (g * parts[name]))
            else:
                view.copy_(view - config.lr * (g * parts[name] + config.weight_decay * view))
    return params.snapshot(), grads


@pytest.mark.parametrize("synced_rounds", [0, 1])
def test_local_model_is_mezos_decayed_steps(
    tiny_bundle: Callable[[], ModelBundle],
    monkeypatch: pytest.MonkeyPatch,
    synced_rounds: int,
) -> None:
    fed = Federation(tiny_bundle(), {"a": 5, "b": 3})
    for number in range(1, synced_rounds + 1):
        fed.round(number, ["a", "b"])
    start = global_model(fed, tiny_bundle())  # what the client syncs to
    # Step 2 sees a NaN loss and is skipped: it must decay all the same.
    trainer, calls = fed.trainers["a"], iter(range(1000))
    loss = trainer.loss
    monkeypatch.setattr(
        trainer, "loss", lambda batch: float("nan") if next(calls) == 4 else loss(batch)
    )
    # Also keep the weights the steps themselves reached, before the client rebuilds them.
    stepped: list[torch.Tensor] = []
    steps_of = fed.client._local_steps

    def spy(task: Payload, trainer: Any, params: Any, *rest: Any) -> Any:
        out = steps_of(task, trainer, params, *rest)
        stepped.append(params.snapshot())
        return out

    monkeypatch.setattr(fed.client, "_local_steps", spy)
    local, _ = fed.train(synced_rounds + 1, ["a"])
    monkeypatch.undo()
    got = fed.replies["a"].tensors["g"]
    assert float(got[2]) == 0.0
    assert int((got != 0).sum()) == CONFIG.local_steps - 1

    reference = LocalTrainer(tiny_bundle(), examples(5, "a"), max_length=32)
    want, grads = mezo_round(reference, start, fed.tasks["a"], CONFIG, skipped={2})
    torch.testing.assert_close(got, torch.tensor(grads), rtol=1e-3, atol=1e-3)
    assert float((local["a"] - want).abs().max()) <= 2e-6
    assert float((stepped[0] - want).abs().max()) <= 2e-6

    # The 1-D tensors only took the seed steps; everything else also shrank.
    seeds = pool_seeds(CONFIG.pool_seed, CONFIG.seeds)
    task_seed = int(fed.tasks["a"].config["seed"])  # type: ignore[arg-type]
    steps = step_indices(task_seed, CONFIG.local_steps, CONFIG.seeds).tolist()
    undecayed = start.clone()
    for g, index in zip(got.tolist(), steps, strict=True):
        undecayed -= CONFIG.lr * g * perturbation(seeds[index], 0, start.numel(), CONFIG.kind)
    spared = one_dimensional(reference)
    assert float((local["a"] - undecayed)[spared].abs().max()) <= 2e-6
    assert float((local["a"] - undecayed)[~spared].abs().max()) > 1e-4


@pytest.mark.parametrize("pro", [False, True], ids=["fedkseed", "fedkseed_pro"])
def test_global_model_is_the_example_weighted_mean_of_local_models(
    tiny_bundle: Callable[[], ModelBundle], pro: bool
) -> None:
    sizes = {"a": 3, "b": 5, "c": 8}
    fed = Federation(tiny_bundle(), sizes, pro=pro)
    w0 = weights(LocalTrainer(tiny_bundle(), [], max_length=32))
    for number in (1, 2, 3):
        local = fed.round(number, list(sizes))
        total = sum(sizes.values())
        expected = sum(local[c].double() * (sizes[c] / total) for c in sizes)
        assert isinstance(expected, torch.Tensor)
        actual = global_model(fed, tiny_bundle())
        assert float((actual - w0).abs().max()) > 1e-4  # the round really changed the model
        assert float((actual.double() - expected).abs().max()) <= 1e-6
    assert fed.server.store is not None
    assert fed.server.store.shape == (CONFIG.seeds + 1, 2)
    scale = float(fed.server.store.current[CONFIG.seeds, 0])
    step = math.log1p(-CONFIG.lr * CONFIG.weight_decay)
    assert scale == pytest.approx(3 * CONFIG.local_steps * step, rel=1e-12)


@pytest.mark.parametrize(
    ("trainable", "shape"),
    [("lora", (CONFIG.seeds + 1, 1)), ("norm", (CONFIG.seeds + 1, 2))],
    ids=["nothing-exempt", "nothing-decayed"],
)
def test_one_sided_sets_keep_the_mean(
    tiny_bundle: Callable[[], ModelBundle], trainable: str, shape: tuple[int, int]
) -> None:
    sizes = {"a": 3, "b": 5}
    fed = Federation(tiny_bundle(), sizes, replace(CONFIG, trainable=trainable))
    for number in (1, 2):
        local = fed.round(number, list(sizes))
        expected = sum(local[c].double() * (sizes[c] / 8) for c in sizes)
        assert isinstance(expected, torch.Tensor)
        actual = global_model(fed, tiny_bundle())
        assert float((actual.double() - expected).abs().max()) <= 1e-6
    assert fed.server.store is not None
    assert fed.server.store.shape == shape
    assert fed.server.update_size() == CONFIG.seeds * shape[1]


def test_client_that_skipped_three_rounds_catches_up_from_a_scaled_delta(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    fed = Federation(tiny_bundle(), {"a": 4, "b": 6})
    fed.add("late", tiny_bundle(), 5)
    fed.round(1, ["a", "b", "late"])
    touched: set[int] = set()
    for number, who in ((2, ["a", "b", "late"]), (3, ["a", "b"]), (4, ["a", "b"]), (5, ["a", "b"])):
        fed.round(number, who)  # in round 2 "late" trains from version 1, which it then holds
        for cid in who:
            seed = int(fed.tasks[cid].config["seed"])  # type: ignore[arg-type]
            touched |= set(step_indices(seed, CONFIG.local_steps, CONFIG.seeds).tolist())
    task = fed.server.configure(6, [ClientInfo("late", 5)])[0].payload
    assert (task.config["base"], task.config["target"]) == (1, 5)
    # Sparse: the seeds rounds 2-5 touched (both blocks) and the scale, not every seed again.
    assert "di" in task.tensors
    rows = set((task.tensors["di"].to(torch.int64) // 2).tolist())
    assert rows == touched | {CONFIG.seeds}
    assert len(touched) < CONFIG.seeds // 2
    params, geometry = fed.client.geometry(fed.trainers["late"])
    version, target = receive(hop(task), fed.states["late"], geometry)
    move_model(fed.trainers["late"].model, params, geometry, target)
    assert version == 5
    expected = global_model(fed, tiny_bundle())
    assert float((weights(fed.trainers["late"]) - expected).abs().max()) <= 1e-6


def test_checkpoint_mid_run_keeps_results_identical(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    fed = Federation(tiny_bundle(), {"a": 4, "b": 4})
    fed.round(1, ["a", "b"])
    restored = FedKSeedServer(CONFIG, seed=5)
    restored.load_state_dict(hop(fed.server.state_dict()))
    infos = [ClientInfo("a", 4), ClientInfo("b", 4)]
    for mine, theirs in zip(
        fed.server.configure(2, infos), restored.configure(2, infos), strict=True
    ):
        assert payload_to_bytes(mine.payload) == payload_to_bytes(theirs.payload)
    _, results = fed.train(2, ["a", "b"])
    fed.server.aggregate(2, results, [])
    restored.aggregate(2, results, [])
    for state in ("global_state", "state_dict"):
        mine, theirs = getattr(fed.server, state)(), getattr(restored, state)()
        assert payload_to_bytes(mine) == payload_to_bytes(theirs), state
    plain = FedKSeedServer(replace(CONFIG, weight_decay=0.0), seed=5)
    with pytest.raises(ValueError, match="cannot switch weight decay"):
        plain.load_state_dict(hop(fed.server.state_dict()))


def test_zero_decay_keeps_the_plain_frame(tiny_bundle: Callable[[], ModelBundle]) -> None:
    config = replace(CONFIG, weight_decay=0.0)
    fed = Federation(tiny_bundle(), {"a": 4, "b": 6}, config)
    params, geometry = fed.client.geometry(fed.trainers["a"])
    assert not geometry.scaled
    assert geometry.shape == (config.seeds, 1)
    assert (geometry.ends, geometry.spans) == ((params.total,), ())
    initial = fed.client.initial_state(fed.trainers["a"])
    assert initial.tensors["ends"].tolist() == [params.total]
    assert fed.server.update_size() == config.seeds
    before = weights(fed.trainers["a"])
    fed.round(1, ["a", "b"])
    for reply in fed.replies.values():
        assert set(reply.tensors) == {"g"}
        assert reply.tensors["g"].dtype == torch.float32
    assert fed.server.store is not None
    assert fed.server.store.shape == (config.seeds, 1)
    # The coefficients are -lr times the example-weighted mean of g per seed, as before decay.
    sums = torch.zeros(config.seeds, dtype=torch.float64)
    for cid, n in (("a", 4), ("b", 6)):
        seed = int(fed.tasks[cid].config["seed"])  # type: ignore[arg-type]
        index = step_indices(seed, config.local_steps, config.seeds)
        sums.index_add_(0, index, fed.replies[cid].tensors["g"].double() * n)
    coeffs = fed.server.global_state().tensors["coeffs"]
    torch.testing.assert_close(coeffs[:, 0], sums * (-config.lr / 10), rtol=1e-15, atol=0.0)
    assert not torch.equal(weights(fed.trainers["a"]), before)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"weight_decay": float("nan")}, "weight_decay must be >= 0"),
        ({"lr": 0.1, "weight_decay": 10.0}, "lr \\* weight_decay must be < 1"),
        ({"lr": 0.5, "weight_decay": 4.0}, "lr \\* weight_decay must be < 1"),
    ],
)
def test_config_refuses_negative_or_overwhelming_decay(
    values: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        FedKSeedConfig(**values)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        FedKSeedProConfig(**values)  # type: ignore[arg-type]
