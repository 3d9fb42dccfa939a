"""Heterogeneous aggregation: exact owner-weighted mean of B A, SVD redistribution, naive error."""

from __future__ import annotations

import pytest
import torch

from fedft.strategies.hetero_base.aggregate import ExactAggregator, ZeroPadAggregator
from fedft.strategies.hetero_base.redistribute import client_factors

D_OUT, D_IN = 24, 16
RANKS = [2, 4, 8, 3]
WEIGHTS = [10.0, 3.0, 7.0, 1.0]
SCALES = [16 / r for r in RANKS]


def client(seed: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D_OUT, rank, generator=g) * 0.1, torch.randn(rank, D_IN, generator=g)


def ideal(clients: list[tuple[torch.Tensor, torch.Tensor]], weights: list[float]) -> torch.Tensor:
    total = sum(weights)
    return sum(
        w / total * s * (b.double() @ a.double())
        for (b, a), w, s in zip(clients, weights, SCALES, strict=False)
    )  # type: ignore[return-value]


def test_exact_aggregate_equals_the_weighted_sum_of_products() -> None:
    clients = [client(i, r) for i, r in enumerate(RANKS)]
    acc = ExactAggregator()
    for (b, a), w, s in zip(clients, WEIGHTS, SCALES, strict=True):
        acc.add({"m": (b, a, s)}, w)
    got = acc.result()["m"].dense()
    assert torch.allclose(got, ideal(clients, WEIGHTS), atol=1e-6, rtol=0)
    assert acc.owners_weight("m") == sum(WEIGHTS)


def test_exact_aggregate_survives_compaction_with_many_clients() -> None:
    ranks = [8] * 6  # stacked inner size 48 > min(24, 16): compacted on the way, still exact
    clients = [client(100 + i, r) for i, r in enumerate(ranks)]
    acc = ExactAggregator()
    for b, a in clients:
        acc.add({"m": (b, a, 1.0)}, 1.0)
    expected = sum(b.double() @ a.double() for b, a in clients) / len(clients)
    result = acc.result()["m"]
    assert result.rank <= 16
    assert torch.allclose(result.dense(), expected, atol=1e-6, rtol=0)  # type: ignore[arg-type]


def test_layers_a_client_does_not_train_take_no_weight_from_it() -> None:
    deep, shallow = client(1, 4), client(2, 2)
    acc = ExactAggregator()
    acc.add({"layers.0.q": (*deep, 1.0), "layers.1.q": (*deep, 1.0)}, 3.0)
    acc.add({"layers.1.q": (*shallow, 1.0)}, 1.0)
    out = acc.result()
    low = deep[0].double() @ deep[1].double()
    high = (3 * low + shallow[0].double() @ shallow[1].double()) / 4
    assert torch.allclose(out["layers.0.q"].dense(), low, atol=1e-9)  # not diluted to 3/4
    assert torch.allclose(out["layers.1.q"].dense(), high, atol=1e-9)


def test_naive_factor_averaging_is_not_the_average_update() -> None:
    """Averaging A and B separately adds cross terms B_i A_j: a large, documented error."""
    clients = [client(i, 4) for i in range(4)]
    weights = [1.0] * 4
    exact = sum(b.double() @ a.double() for b, a in clients) / 4
    naive = (sum(b.double() for b, _ in clients) / 4) @ (sum(a.double() for _, a in clients) / 4)
    acc = ExactAggregator()
    for (b, a), w in zip(clients, weights, strict=True):
        acc.add({"m": (b, a, 1.0)}, w)
    exact_err = torch.linalg.matrix_norm(
        acc.result()["m"].dense() - exact
    ) / torch.linalg.matrix_norm(exact)  # type: ignore[operator]
    naive_err = torch.linalg.matrix_norm(naive - exact) / torch.linalg.matrix_norm(exact)  # type: ignore[operator]
    assert exact_err < 1e-12
    assert naive_err > 0.5  # independent factors: the mean product is mostly cross terms


def test_redistribution_is_the_best_rank_r_approximation() -> None:
    clients = [client(i, r) for i, r in enumerate(RANKS)]
    acc = ExactAggregator()
    for (b, a), w, s in zip(clients, WEIGHTS, SCALES, strict=True):
        acc.add({"m": (b, a, s)}, w)
    update = acc.result()["m"]
    dense = update.dense()
    u, sv, vh = torch.linalg.svd(dense, full_matrices=False)
    a_init = torch.randn(8, D_IN)
    for rank in (1, 2, 5, 8):
        scale = 16 / rank
        b, a = client_factors(update, rank, scale, a_init)
        assert b.shape == (D_OUT, rank)
        assert a.shape == (rank, D_IN)
        reference = (u[:, :rank] * sv[:rank]) @ vh[:rank]
        assert torch.allclose(scale * (b.double() @ a.double()), reference, atol=1e-5)


def test_redistribution_of_a_small_update_pads_with_the_initial_a() -> None:
    b0, a0 = client(7, 1)
    acc = ExactAggregator()
    acc.add({"m": (b0, a0, 1.0)}, 1.0)
    a_init = torch.randn(6, D_IN)
    b, a = client_factors(acc.result()["m"], 4, 2.0, a_init)
    assert torch.equal(a[1:], a_init[1:4])  # rows past the update's rank: PEFT's random A
    assert torch.count_nonzero(b[:, 1:]) == 0  # with zero B columns, so the product is exact
    assert torch.allclose(2.0 * (b.double() @ a.double()), b0.double() @ a0.double(), atol=1e-6)


def test_zero_padding_normalises_each_rank_row_by_its_owners() -> None:
    small, large = client(1, 2), client(2, 4)
    previous = {
        "m": (torch.zeros(D_OUT, 4, dtype=torch.float64), torch.ones(4, D_IN, dtype=torch.float64))
    }
    acc = ZeroPadAggregator({"m": (D_OUT, D_IN)}, max_rank=4)
    acc.add({"m": (*small, 1.0)}, 1.0)
    acc.add({"m": (*large, 1.0)}, 3.0)
    b, a = acc.result(previous)["m"]
    assert torch.allclose(a[:2], (small[1].double() + 3 * large[1][:2].double()) / 4)
    assert torch.allclose(a[2:], large[1][2:].double())  # only the rank-4 client owns rows 2..3
    assert torch.allclose(b[:, 2:], large[0][:, 2:].double())
    assert ZeroPadAggregator.norm_weight({"m": (*small, 2.0)}) > 0


def test_naive_error_from_a_shared_start_is_second_order_in_the_drift() -> None:
    """Clients that start from the same (A, B) drift apart; naive error grows as drift^2."""
    g = torch.Generator().manual_seed(1)
    b0 = torch.randn(D_OUT, 4, generator=g, dtype=torch.float64) * 0.1
    a0 = torch.randn(4, D_IN, generator=g, dtype=torch.float64)
    noise = [
        (
            torch.randn(D_OUT, 4, generator=g, dtype=torch.float64) * 0.1,
            torch.randn(4, D_IN, generator=g, dtype=torch.float64),
        )
        for _ in range(4)
    ]

    def naive_error(drift: float) -> float:
        clients = [(b0 + drift * nb, a0 + drift * na) for nb, na in noise]
        exact = sum(b @ a for b, a in clients) / 4
        naive = (sum(b for b, _ in clients) / 4) @ (sum(a for _, a in clients) / 4)
        return float(torch.linalg.matrix_norm(naive - exact) / torch.linalg.matrix_norm(exact))  # type: ignore[operator]

    small, large = naive_error(0.01), naive_error(0.1)
    assert 0 < small < 1e-3
    assert 50 < large / small < 200  # 10x the drift, ~100x the error


def test_layer_indices_from_llama_and_gpt2_names() -> None:
    from fedft.core.layout import layer_of

    assert layer_of("base_model.model.model.layers.12.self_attn.q_proj") == 12
    assert layer_of("base_model.model.transformer.h.3.attn.c_attn") == 3
    with pytest.raises(ValueError, match="layer index"):
        layer_of("base_model.model.lm_head")
