"""Server half of fedavg_lora: exact weighted mean, one-pass streaming, validation, checkpoints."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.strategy import ClientInfo, Failure, Result
from fedft.strategies.fedavg_lora import FedAvgLoRAConfig, FedAvgLoRAServer

SHAPES = {"layer.0.lora_A.weight": (4, 16), "layer.0.lora_B.weight": (16, 4), "head.lora_A": (2, 3)}


def adapter(seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g).to(dtype) for n, s in SHAPES.items()}


def make_server(**overrides: object) -> FedAvgLoRAServer:
    server = FedAvgLoRAServer(FedAvgLoRAConfig.from_dict(dict(overrides)), seed=7)
    server.initialize(Payload(tensors=adapter(0)))
    return server


def result(cid: str, tensors: dict[str, torch.Tensor], n: int, loss: float = 1.0) -> Result:
    return Result(cid, Payload(tensors=tensors, metrics={"num_examples": n, "train_loss": loss}))


def test_aggregate_is_the_example_weighted_mean() -> None:
    server = make_server()
    counts = [3, 50, 7, 1000, 1]
    updates = [adapter(10 + i) for i in range(len(counts))]
    pairs = enumerate(zip(updates, counts, strict=True))
    metrics = server.aggregate(1, [result(f"c{i}", u, n, loss=float(i)) for i, (u, n) in pairs], [])
    total = sum(counts)
    for name in SHAPES:
        expected = sum(n * u[name].double() for u, n in zip(updates, counts, strict=True)) / total
        got = server.global_state().tensors[name]
        assert got.dtype == torch.float32
        assert (got.double() - expected).abs().max().item() <= 1e-6
    assert metrics["accepted"] == len(counts)
    assert metrics["train_loss"] == pytest.approx(sum(i * n for i, n in enumerate(counts)) / total)


def test_aggregate_accepts_low_precision_updates() -> None:
    server = make_server()
    update = adapter(3, torch.bfloat16)
    server.aggregate(1, [result("a", update, 5)], [])
    for name, tensor in server.global_state().tensors.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, update[name].float())


def test_aggregate_streams_results_in_one_pass() -> None:
    """Results are released as the pass goes on: at most the one just used is still referenced."""
    server = make_server()
    alive: list[weakref.ref[Payload]] = []

    def stream() -> Iterator[Result]:
        # Reference counting frees a payload as soon as nothing holds it (payloads have no
        # cycles), so no gc.collect() is needed to observe it.
        for i in range(200):
            # The consumer's loop variable may still hold the latest result, never an older one.
            assert all(ref() is None for ref in alive[:-1]), "aggregate kept earlier results alive"
            payload = Payload(tensors=adapter(i), metrics={"num_examples": 1 + i % 5})
            alive.append(weakref.ref(payload))
            yield Result(f"c{i}", payload)
            del payload

    metrics = server.aggregate(1, stream(), [])
    assert metrics["accepted"] == 200


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: {**t, "layer.0.lora_A.weight": torch.full((4, 16), float("nan"))}, "NaN"),
        (lambda t: {**t, "head.lora_A": torch.zeros(3, 2)}, "shape"),
        (lambda t: {k: v for k, v in t.items() if k != "head.lora_A"}, "names"),
        (lambda t: {**t, "extra": torch.zeros(1)}, "names"),
        (lambda t: {**t, "head.lora_A": torch.zeros(2, 3, dtype=torch.int32)}, "floating"),
    ],
)
def test_invalid_updates_are_rejected_and_leave_the_global_unchanged(
    mutate: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server()
    before = {n: t.clone() for n, t in server.global_state().tensors.items()}
    bad = mutate(adapter(5))  # type: ignore[operator]
    metrics = server.aggregate(1, [result("bad", bad, 10)], [Failure("gone", "timeout")])
    assert metrics == {"accepted": 0, "rejected": 1, "failures": 1}
    assert all(torch.equal(before[n], t) for n, t in server.global_state().tensors.items())
    assert reason in caplog.text


def test_weightless_updates_are_rejected() -> None:
    server = make_server()
    bad = Result("x", Payload(tensors=adapter(1), metrics={"num_examples": 0}))
    good = result("y", adapter(2), 4)
    metrics = server.aggregate(1, [bad, good], [])
    assert (metrics["accepted"], metrics["rejected"]) == (1, 1)
    assert torch.equal(server.global_state().tensors["head.lora_A"], adapter(2)["head.lora_A"])


def test_configure_samples_and_sends_the_global_adapter() -> None:
    server = make_server(fraction=0.5, local_steps=3, lr=0.01, batch_size=2)
    clients = [ClientInfo(f"client-{i}", 10) for i in range(10)]
    tasks = server.configure(4, clients)
    assert len(tasks) == 5
    again = server.configure(4, list(reversed(clients)))
    assert [(t.client_id, t.payload.config) for t in tasks] == [
        (t.client_id, t.payload.config) for t in again
    ]
    seeds = {t.payload.config["seed"] for t in tasks}
    assert len(seeds) == 5
    for task in tasks:
        cfg = task.payload.config
        assert (cfg["round"], cfg["local_steps"], cfg["lr"], cfg["batch_size"]) == (4, 3, 0.01, 2)
        assert set(task.payload.tensors) == set(SHAPES)
    assert server.configure(1, clients[:0]) == []


def test_configure_waits_for_min_clients() -> None:
    server = make_server(min_clients=3)
    assert server.configure(1, [ClientInfo("a"), ClientInfo("b")]) == []
    assert len(server.configure(1, [ClientInfo("a"), ClientInfo("b"), ClientInfo("c")])) == 3


def test_state_dict_round_trip_resumes_identically() -> None:
    server = make_server()
    server.aggregate(1, [result("a", adapter(8), 3), result("b", adapter(9), 1)], [])
    resumed = FedAvgLoRAServer(server.config, seed=7)
    resumed.load_state_dict(server.state_dict())
    for name, tensor in server.global_state().tensors.items():
        assert torch.equal(resumed.global_state().tensors[name], tensor)
    (mine,), (theirs,) = (
        resumed.configure(2, [ClientInfo("a")]),
        server.configure(2, [ClientInfo("a")]),
    )
    assert mine.payload.config == theirs.payload.config


def test_configure_before_initialize_is_an_error() -> None:
    server = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=0)
    with pytest.raises(RuntimeError, match="initialize"):
        server.configure(1, [ClientInfo("a")])


def old_aggregate(
    start: dict[str, torch.Tensor], updates: list[dict[str, torch.Tensor]], counts: list[int]
) -> dict[str, torch.Tensor]:
    """The formula fedavg_lora's own aggregate used before it took LinearUpdates' default."""
    out = {}
    for name, tensor in start.items():
        buffer = torch.zeros(tensor.numel(), dtype=torch.float64)
        for update, n in zip(updates, counts, strict=True):
            buffer.add_(update[name].reshape(-1).to(torch.float64), alpha=float(n))
        out[name] = (buffer / sum(counts)).reshape(tensor.shape).to(torch.float32)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_default_aggregate_is_bit_identical_to_the_old_formula(seed: int) -> None:
    """LinearUpdates' default (global + mean of deltas) lands on the same fp32 adapter."""
    g = torch.Generator().manual_seed(seed)
    server = make_server()
    start = {n: t.clone() for n, t in server.global_state().tensors.items()}
    counts = [int(c) for c in torch.randint(1, 500, (7,), generator=g)]
    # Clients drift from the global adapter by different amounts, as after local training.
    updates = [
        {n: t + torch.randn(t.shape, generator=g) * 10.0 ** float(-i) for n, t in start.items()}
        for i in range(len(counts))
    ]
    server.aggregate(
        1, [result(f"c{i}", u, n) for i, (u, n) in enumerate(zip(updates, counts, strict=True))], []
    )
    expected = old_aggregate(start, updates, counts)
    for name, tensor in server.global_state().tensors.items():
        assert torch.equal(tensor.view(torch.int32), expected[name].view(torch.int32)), name
