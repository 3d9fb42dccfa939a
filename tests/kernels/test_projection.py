"""Ferret projection / reconstruction: the Triton kernel against the torch reference."""

from __future__ import annotations

import pytest
import torch

from fedft.core.rng import KINDS, perturbation
from fedft.kernels.projection import project, reconstruct

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SEEDS = [3, 2**64 - 1, 2**40 + 17, 8]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("base", [0, 2**32 - 1500])
def test_triton_projection_matches_reference(
    kind: str, base: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    delta = torch.randn(3000, generator=torch.Generator().manual_seed(5))
    monkeypatch.setenv("FEDFT_KERNELS", "torch")
    expected = project(delta, base, SEEDS, kind)
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    got = project(delta.to(DEVICE), base, SEEDS, kind)
    again = project(delta.to(DEVICE), base, SEEDS, kind)
    assert got.dtype == torch.float64
    # fp32 products are exact in fp64: only the summation order differs from the reference.
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)
    assert torch.equal(got, again)  # fixed reduction order: identical run to run
    # And it is the dot product with the contract's z.
    direct = torch.stack(
        [perturbation(s, base, 3000, kind).double() @ delta.double() for s in SEEDS]
    )
    torch.testing.assert_close(got, direct, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_triton_reconstruction_equals_reference(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    coeffs = [0.25, -1.5, 3e-4, 2.0]
    monkeypatch.setenv("FEDFT_KERNELS", "torch")
    expected = reconstruct(2100, 2**33 + 1, SEEDS, coeffs, kind)
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    got = reconstruct(2100, 2**33 + 1, SEEDS, coeffs, kind, device=DEVICE)
    assert torch.equal(got.cpu(), expected)
    assert expected.abs().sum() > 0


def test_projection_round_trip_recovers_a_vector_in_the_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unit-variance bases are nearly orthogonal in high dimension: <z_j, z_k> / d ~ delta_jk.
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    d = 4096
    target = reconstruct(d, 0, SEEDS[:2], [1.0, -2.0], "rademacher", device=DEVICE)
    coords = project(target, 0, SEEDS[:2], "rademacher") / d
    torch.testing.assert_close(
        coords, torch.tensor([1.0, -2.0], dtype=torch.float64), atol=0.1, rtol=0
    )
