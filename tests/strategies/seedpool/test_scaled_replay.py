"""The scaled frame: a block is ``a * (w0 + sum C z)`` with ``ln a`` in a final coefficient row."""

from __future__ import annotations

import math
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
    scale_spans_,
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
        self.norm = torch.nn.Parameter(torch.randn(7, generator=gen))
        self.emb = torch.nn.Parameter(torch.randn(2, 4, generator=gen))
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(3, 5, generator=gen))
            self.proj.bias.copy_(torch.randn(3, generator=gen))


# Stream: emb [0, 8) | norm [8, 15) | proj.bias [15, 18) | proj.weight [18, 33).
DECAYED = ((0, 8), (18, 33))
SPARED = ((8, 18),)


def setup_model() -> tuple[Tiny, FlatParams, Geometry]:
    model = Tiny()
    params = FlatParams(dict(model.named_parameters()))
    return (
        model,
        params,
        geometry_of(SEEDS, "irwin_hall", params, [23, 33], [DECAYED, SPARED], scaled=True),
    )


def scaled_coeffs(seed: int, log_scale: float) -> torch.Tensor:
    c = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) / 10
    c[4] = torch.tensor([log_scale, 0.0])
    return c


def reference(w0: torch.Tensor, geometry: Geometry, c: torch.Tensor) -> torch.Tensor:
    """Block l is ``exp(c[K, l]) * (w0 + sum_k c[k, l] z_k)``, in float64."""
    out = w0.double().clone()
    for block in range(2):
        acc = w0.double().clone()
        for k, seed in enumerate(geometry.seeds):
            acc += float(c[k, block]) * perturbation(seed, 0, w0.numel(), geometry.kind).double()
        for start, end in geometry.block_spans(block):
            out[start:end] = math.exp(float(c[4, block])) * acc[start:end]
    return out


def test_a_scaled_geometry_has_one_more_row() -> None:
    _, _, geometry = setup_model()
    assert geometry.shape == (5, 2)
    unscaled = Geometry(
        geometry.seeds, geometry.kind, geometry.ends, geometry.names, geometry.spans
    )
    assert unscaled.shape == (4, 2)
    assert unscaled != geometry  # a model tagged in one frame is not read in the other


def test_move_model_scales_blocks_and_replays_the_seed_rows() -> None:
    model, params, geometry = setup_model()
    w0 = params.snapshot()
    first, second = scaled_coeffs(1, -0.25), scaled_coeffs(2, -0.5)
    move_model(model, params, geometry, first)
    torch.testing.assert_close(
        params.snapshot().double(), reference(w0, geometry, first), rtol=0, atol=1e-6
    )
    move_model(model, params, geometry, second)  # a delta: rescale by a2/a1, replay a2 * dC
    torch.testing.assert_close(
        params.snapshot().double(), reference(w0, geometry, second), rtol=0, atol=1e-6
    )
    assert torch.equal(held_coefficients(model, geometry), second)
    fresh, fresh_params, _ = setup_model()
    move_model(fresh, fresh_params, geometry, second)  # straight from w0
    torch.testing.assert_close(fresh_params.snapshot(), params.snapshot(), rtol=0, atol=1e-6)
    move_model(model, params, geometry, torch.zeros(5, 2, dtype=torch.float64))
    torch.testing.assert_close(params.snapshot(), w0, rtol=0, atol=1e-6)


def test_an_exempt_block_is_never_rescaled() -> None:
    model, params, geometry = setup_model()
    w0 = params.snapshot()
    only_scale = torch.zeros(5, 2, dtype=torch.float64)
    only_scale[4, 0] = math.log(0.5)
    move_model(model, params, geometry, only_scale)
    w = params.snapshot()
    for start, end in SPARED:
        assert torch.equal(w[start:end], w0[start:end])
    for start, end in DECAYED:
        assert torch.equal(w[start:end], w0[start:end] * 0.5)


def test_scale_spans_rounds_each_product_once() -> None:
    model = Tiny()
    params = FlatParams(dict(model.named_parameters()))
    w0 = params.snapshot()
    factor = 1 - 1e-9 * math.pi  # not an fp32 value: the product is taken in float64
    scale_spans_(params, [(2, 20)], factor)
    w = params.snapshot()
    assert torch.equal(w[2:20], (w0[2:20].double() * factor).float())
    assert torch.equal(w[:2], w0[:2])
    assert torch.equal(w[20:], w0[20:])
    scale_spans_(params, [(0, 33)], 0.75)  # an fp32 value: plain fp32 multiply
    assert torch.equal(params.snapshot(), w * 0.75)


def test_apply_coefficients_reads_only_the_seed_rows() -> None:
    _, params, geometry = setup_model()
    c = scaled_coeffs(3, 5.0)
    w0 = params.snapshot()
    apply_coefficients_(params, geometry, c)
    _, expected, _ = setup_model()
    apply_coefficients_(expected, geometry, c[:4])
    assert torch.equal(params.snapshot(), expected.snapshot())
    assert not torch.equal(params.snapshot(), w0)


def test_receive_rebuilds_the_scale_row() -> None:
    _, _, geometry = setup_model()
    target = scaled_coeffs(4, -0.125)
    task = Payload(tensors=encode_delta(target), config={"base": 0, "target": 3})
    state = Payload()
    version, got = receive(task, state, geometry)
    assert version == 3
    assert got.shape == (5, 2)
    assert torch.equal(got, target.float().double())
    assert torch.equal(state.tensors["v.3"], got)
    assert held_coefficients(Tiny(), geometry).shape == (5, 2)
