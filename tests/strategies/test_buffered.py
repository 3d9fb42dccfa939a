"""FedBuff's buffer: one version per K updates, staleness discount and cap, stale LoRA bases."""

from __future__ import annotations

import math

import pytest
import torch

from fedft.core.async_options import AsyncSettings, staleness_weight
from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.strategy import ClientInfo, Result
from fedft.strategies.buffered import BufferedAggregator
from fedft.strategies.fedavg_lora import FedAvgLoRAConfig, FedAvgLoRAServer
from fedft.strategies.legend import LegendConfig, LegendServer

SHAPES = {"m.lora_A.weight": (2, 6), "m.lora_B.weight": (6, 2)}


def adapter(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=g) for n, s in SHAPES.items()}


def lora_server() -> FedAvgLoRAServer:
    server = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=3)
    server.initialize(Payload(tensors=adapter(0)))
    return server


def answer(cid: str, tensors: dict[str, torch.Tensor], n: int) -> Result:
    return Result(cid, Payload(tensors=tensors, metrics={"num_examples": n, "train_loss": 1.0}))


def test_staleness_weight_is_fedbuffs_polynomial_discount() -> None:
    assert staleness_weight(0) == 1.0
    assert staleness_weight(3) == pytest.approx(0.5)
    assert staleness_weight(8) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="staleness"):
        staleness_weight(-1)


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("buffer", 0, "--buffer"),
        ("max_staleness", -1, "--max-staleness"),
        ("concurrency", -2, "--concurrency"),
    ],
)
def test_settings_refuse_bad_values_naming_the_flag(field: str, value: int, flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        AsyncSettings(**{field: value})


def test_one_version_per_k_updates_with_staleness_weights() -> None:
    server = lora_server()
    agg = BufferedAggregator(server, AsyncSettings(buffer=2, max_staleness=4))
    initial = {n: t.clone() for n, t in server.adapter.items()}
    # Three clients take the initial model; two answer and make version 1.
    d = {c: agg.dispatch(ClientInfo(c, 10)) for c in ("a", "b", "c")}
    ups = {c: adapter(10 + i) for i, c in enumerate("abc")}
    assert agg.submit(d["a"].ticket, answer("a", ups["a"], 10)) is None  # type: ignore[union-attr]
    assert not agg.ready()
    assert all(torch.equal(server.adapter[n], initial[n]) for n in SHAPES)  # nothing applied yet
    assert agg.submit(d["b"].ticket, answer("b", ups["b"], 30)) is None  # type: ignore[union-attr]
    assert agg.ready()
    metrics = agg.apply()
    assert agg.versions == 1
    assert metrics["accepted"] == 2
    assert metrics["staleness_max"] == 0
    for n in SHAPES:
        want = (
            initial[n].double()
            + (10 * (ups["a"][n] - initial[n]) + 30 * (ups["b"][n] - initial[n])) / 40
        )
        assert torch.allclose(server.adapter[n].double(), want, atol=1e-6)
    v1 = {n: t.clone() for n, t in server.adapter.items()}
    # "c" trained from version 0 and lands after version 1: one version stale. Its delta is
    # measured from the adapter its task carried, and it counts 1/sqrt(2).
    d["d"] = agg.dispatch(ClientInfo("d", 10))
    ups["d"] = adapter(20)
    assert agg.staleness(d["c"].ticket) == 1  # type: ignore[union-attr]
    assert agg.submit(d["c"].ticket, answer("c", ups["c"], 20)) is None  # type: ignore[union-attr]
    assert agg.submit(d["d"].ticket, answer("d", ups["d"], 20)) is None  # type: ignore[union-attr]
    metrics = agg.apply()
    assert metrics["staleness_mean"] == 0.5
    for n in SHAPES:
        stale = (ups["c"][n] - initial[n]).double() * 20 * staleness_weight(1)
        fresh = (ups["d"][n] - v1[n]).double() * 20
        assert torch.allclose(
            server.adapter[n].double(), v1[n].double() + (stale + fresh) / 40, atol=1e-6
        )


def test_an_update_beyond_the_cap_is_refused_with_a_clear_reason() -> None:
    server = lora_server()
    agg = BufferedAggregator(server, AsyncSettings(buffer=1, max_staleness=1))
    slow = agg.dispatch(ClientInfo("slow", 5))
    assert slow is not None
    for i in range(2):  # two versions pass while "slow" trains
        fast = agg.dispatch(ClientInfo("fast", 5))
        assert fast is not None
        assert agg.submit(fast.ticket, answer("fast", adapter(30 + i), 5)) is None
        agg.apply()
    before = {n: t.clone() for n, t in server.adapter.items()}
    refusal = agg.submit(slow.ticket, answer("slow", adapter(40), 5))
    assert refusal is not None
    assert "stale update" in refusal
    assert "--max-staleness 1" in refusal
    assert agg.buffered == 0
    assert all(torch.equal(server.adapter[n], before[n]) for n in SHAPES)
    # The same ticket cannot be answered twice.
    assert "no outstanding task" in str(agg.submit(slow.ticket, answer("slow", adapter(40), 5)))


def test_a_malformed_update_is_refused_by_the_strategy_check() -> None:
    agg = BufferedAggregator(lora_server(), AsyncSettings(buffer=1))
    task = agg.dispatch(ClientInfo("x", 5))
    assert task is not None
    bad = adapter(1)
    bad["m.lora_A.weight"] = torch.full((2, 6), math.inf)
    assert "NaN or Inf" in str(agg.submit(task.ticket, answer("x", bad, 5)))


def test_strategies_without_update_vectors_are_refused_in_one_line() -> None:
    with pytest.raises(UsageError, match="cannot run with --mode async"):
        BufferedAggregator(LegendServer(LegendConfig(), seed=0), AsyncSettings(), name="legend")


def test_lora_checkpoint_keeps_old_versions_and_their_tasks() -> None:
    server = lora_server()
    agg = BufferedAggregator(server, AsyncSettings(buffer=1, max_staleness=2))
    old = agg.dispatch(ClientInfo("old", 5))
    new = agg.dispatch(ClientInfo("new", 5))
    assert old is not None
    assert new is not None
    assert agg.submit(new.ticket, answer("new", adapter(50), 5)) is None
    agg.apply()
    restored = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=3)
    restored.load_state_dict(server.state_dict())
    late = answer("old", adapter(60), 5)
    want = server.update_vector(old.ticket, late)
    assert want is not None
    assert restored.check_update(old.ticket, late) is None
    got = restored.update_vector(old.ticket, late)
    assert got is not None
    assert torch.equal(got, want)
    # Measured from the initial adapter, not from the current one.
    assert not torch.equal(want, restored.update_vector(restored.version + 1, late))  # type: ignore[arg-type]


def test_a_sync_checkpoint_of_only_the_adapter_still_loads() -> None:
    server = FedAvgLoRAServer(FedAvgLoRAConfig(), seed=3)
    server.load_state_dict(Payload(tensors=adapter(0)))
    assert server.version == 0
    assert not server.held
    assert set(server.global_state().tensors) == set(SHAPES)


def test_the_seed_store_keeps_the_newest_versions_for_stale_clients() -> None:
    from fedft.strategies.seedpool.coefficients import CoefficientStore

    store = CoefficientStore((4, 1))
    store.keep = 2
    for version in (5, 9, 12, 20):
        store.commit(torch.ones(4, 1), version)
    assert [v for v in (5, 9, 12, 20) if store.holds(v)] == [9, 12, 20]
    store.keep = 0
    store.commit(torch.ones(4, 1), 21)
    assert not store.holds(12)
    assert store.holds(21)
