"""Tests for the client side of seed sync: rebuilding versions and moving a model between them."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.rng import perturbation
from fedft.kernels.dispatch import ENV_KERNELS, ENV_LEGACY_RNG
from fedft.kernels.seed_ops import FlatParams
from fedft.strategies.seedpool.pool import pool_seeds
from fedft.strategies.seedpool.replay import (
    Geometry,
    apply_coefficients_,
    geometry_of,
    held_coefficients,
    move_model,
    receive,
    set_held,
)
from fedft.strategies.seedpool.wire import encode_delta

SEEDS = pool_seeds(42, 4)


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (ENV_KERNELS, ENV_LEGACY_RNG):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.proj = torch.nn.Linear(5, 3)
        self.scale = torch.nn.Parameter(torch.randn(7, generator=gen))
        self.emb = torch.nn.Parameter(torch.randn(2, 4, generator=gen))
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(3, 5, generator=gen))
            self.proj.bias.copy_(torch.randn(3, generator=gen))


def setup_model(kind: str = "irwin_hall") -> tuple[Tiny, FlatParams, Geometry]:
    model = Tiny()
    params = FlatParams(dict(model.named_parameters()))
    # Layout: emb (8) | proj.bias (3) | proj.weight (15) | scale (7); blocks cut mid-layout.
    return model, params, geometry_of(SEEDS, kind, params, [11, 26, 33])


def coeffs(seed: int, shape: tuple[int, int] = (4, 3)) -> torch.Tensor:
    c = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    c[1, 0] = 0.0  # an unused (seed, block) pair
    return c / 10


def reference(w0: torch.Tensor, geometry: Geometry, c: torch.Tensor) -> torch.Tensor:
    """w0 + sum_{k,l} C[k, l] z_k|block_l in float64."""
    out = w0.double().clone()
    total = w0.numel()
    for k, seed in enumerate(geometry.seeds):
        z = perturbation(seed, 0, total, geometry.kind).double()
        for block in range(len(geometry.ends)):
            start, end = geometry.block(block)
            out[start:end] += float(c[k, block]) * z[start:end]
    return out


def test_geometry_shape_and_blocks() -> None:
    _, params, geometry = setup_model()
    assert geometry.shape == (4, 3)
    assert [geometry.block(i) for i in range(3)] == [(0, 11), (11, 26), (26, 33)]
    assert geometry.names == params.layout.names
    assert geometry.seeds == SEEDS


@pytest.mark.parametrize("kind", ["irwin_hall", "rademacher"])
def test_move_model_replays_the_coefficients(kind: str) -> None:
    model, params, geometry = setup_model(kind)
    fresh = copy.deepcopy(model)
    w0 = params.snapshot()
    assert torch.equal(held_coefficients(model, geometry), torch.zeros(4, 3, dtype=torch.float64))

    target = coeffs(1)
    move_model(model, params, geometry, target)
    assert torch.equal(held_coefficients(model, geometry), target)
    # Bit-identical to applying the coefficients to a fresh copy...
    fresh_params = FlatParams(dict(fresh.named_parameters()))
    apply_coefficients_(fresh_params, geometry, target)
    assert torch.equal(params.snapshot(), fresh_params.snapshot())
    # ...and w0 + sum C z up to fp32 rounding.
    torch.testing.assert_close(
        params.snapshot().double(), reference(w0, geometry, target), rtol=0, atol=1e-6
    )

    second = coeffs(2)
    move_model(model, params, geometry, second)
    torch.testing.assert_close(
        params.snapshot().double(), reference(w0, geometry, second), rtol=0, atol=1e-6
    )
    move_model(model, params, geometry, torch.zeros(4, 3, dtype=torch.float64))
    torch.testing.assert_close(params.snapshot(), w0, rtol=0, atol=1e-6)


def test_moving_to_the_held_version_changes_nothing() -> None:
    model, params, geometry = setup_model()
    move_model(model, params, geometry, coeffs(3))
    before = params.snapshot()
    move_model(model, params, geometry, coeffs(3))
    assert torch.equal(params.snapshot(), before)


def test_apply_coefficients_touches_only_blocks_with_nonzero_columns() -> None:
    _, params, geometry = setup_model()
    w0 = params.snapshot()
    c = torch.zeros(4, 3, dtype=torch.float64)
    c[2, 1] = 0.5
    apply_coefficients_(params, geometry, c, scale=-2.0)
    after = params.snapshot()
    assert torch.equal(after[:11], w0[:11])
    assert torch.equal(after[26:], w0[26:])
    z = perturbation(SEEDS[2], 11, 15, "irwin_hall")
    assert torch.equal(after[11:26], w0[11:26] + z * -1.0)


def test_move_model_rejects_a_wrong_shape() -> None:
    model, params, geometry = setup_model()
    with pytest.raises(ValueError, match="expected"):
        move_model(model, params, geometry, torch.zeros(4, 2, dtype=torch.float64))


def test_held_coefficients_of_another_geometry_raise() -> None:
    model, params, geometry = setup_model()
    move_model(model, params, geometry, coeffs(4))
    others = [
        geometry_of(SEEDS, "rademacher", params, geometry.ends),
        geometry_of(pool_seeds(43, 4), "irwin_hall", params, geometry.ends),
        geometry_of(SEEDS, "irwin_hall", params, [params.total]),
    ]
    for other in others:
        assert other != geometry
        with pytest.raises(RuntimeError, match="reload"):
            held_coefficients(model, other)
    # Another model object holds nothing yet.
    assert not held_coefficients(Tiny(), geometry).any()


def test_set_held_stores_a_float64_copy() -> None:
    model, _, geometry = setup_model()
    c = coeffs(5).to(torch.float32)
    original = c.clone()
    set_held(model, geometry, c)
    c.add_(1.0)
    held = held_coefficients(model, geometry)
    assert held.dtype == torch.float64
    assert torch.equal(held, original.double())


def task(base: int, target: int, delta: torch.Tensor) -> Payload:
    return Payload(tensors=encode_delta(delta), config={"base": base, "target": target})


def test_receive_from_version_zero_dense() -> None:
    _, _, geometry = setup_model()
    delta = coeffs(6)
    assert set(encode_delta(delta)) == {"d"}
    state = Payload(tensors={"v.1": coeffs(7), "other": torch.ones(2)})
    version, got = receive(task(0, 3, delta), state, geometry)
    assert version == 3
    assert got.dtype == torch.float64
    assert torch.equal(got, delta.to(torch.float32).double())
    # Version 0 is implicit, so only the target is kept; unrelated state is left alone.
    assert set(state.tensors) == {"v.3", "other"}
    assert torch.equal(state.tensors["v.3"], got)


def test_receive_from_a_held_base_sparse() -> None:
    _, _, geometry = setup_model()
    held = {"v.1": coeffs(8), "v.2": coeffs(9)}
    delta = torch.zeros(4, 3, dtype=torch.float64)
    delta[3, 2] = 0.25
    assert set(encode_delta(delta)) == {"di", "dv"}
    state = Payload(tensors=dict(held))
    version, got = receive(task(2, 5, delta), state, geometry)
    assert version == 5
    assert torch.equal(got, held["v.2"] + delta)
    assert set(state.tensors) == {"v.2", "v.5"}
    assert torch.equal(state.tensors["v.2"], held["v.2"])
    assert torch.equal(state.tensors["v.5"], got)


def test_receive_survives_a_serialized_local_state() -> None:
    from fedft.core.serde import payload_from_bytes, payload_to_bytes

    _, _, geometry = setup_model()
    state = Payload()
    _, first = receive(task(0, 1, coeffs(10)), state, geometry)
    state = payload_from_bytes(payload_to_bytes(state))
    _, second = receive(task(1, 2, coeffs(11)), state, geometry)
    assert torch.equal(second, first + coeffs(11).to(torch.float32).double())
    assert set(state.tensors) == {"v.1", "v.2"}


def test_receive_without_the_base_raises_and_keeps_the_state() -> None:
    _, _, geometry = setup_model()
    state = Payload(tensors={"v.1": coeffs(12)})
    with pytest.raises(LookupError, match="version 4"):
        receive(task(4, 5, coeffs(13)), state, geometry)
    assert set(state.tensors) == {"v.1"}
