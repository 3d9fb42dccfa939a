"""The Triton seeded kernels against the torch reference: z, perturb and replay bit for bit."""

from __future__ import annotations

import pytest
import torch

from fedft.core.rng import KINDS, derive_seed, perturbation
from fedft.kernels import seeded
from fedft.kernels.reference import seeded as reference
from fedft.kernels.seed_ops import FlatParams, apply_seeds_, perturb_

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")  # else the interpreter (conftest.py)

SEEDS = [0, 12345, derive_seed(3, 1, 4), 2**63, 2**64 - 1]
# 2**32 - 700 makes a 2500-element call cross the counter's high-word step inside one program;
# the others are past 2**32 and past 2**63.
OFFSETS = [0, 2**32 - 700, 3 * 2**32 + 5, 2**63 + 11]
N = 2500  # three programs of 1024: a full tile, another, and a masked tail


@pytest.mark.usefixtures("force_triton")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("seed", "offset"), list(zip(SEEDS, [*OFFSETS, 7], strict=True)))
def test_triton_z_equals_the_contract_bit_for_bit(kind: str, seed: int, offset: int) -> None:
    out = seeded.fill(torch.empty(N, device=DEVICE), seed, offset, kind)
    assert torch.equal(out.cpu(), perturbation(seed, offset, N, kind))


@pytest.mark.usefixtures("force_triton")
def test_triton_z_golden_values_past_two_to_the_32() -> None:
    # The offsets 2**32 + 0..7 are the golden window of tests/core/test_rng.py.
    out = seeded.fill(torch.empty(8, device=DEVICE), 2**64 - 1, 2**32, "rademacher")
    assert torch.equal(out.cpu(), perturbation(2**64 - 1, 2**32, 8, "rademacher"))
    assert set(out.cpu().tolist()) <= {-1.0, 1.0}


@pytest.mark.usefixtures("force_triton")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_triton_perturb_equals_reference(kind: str, offset: int) -> None:
    start = torch.randn(N, generator=torch.Generator().manual_seed(1))
    expected = start.clone()
    reference.perturb_(expected, 2**64 - 5, offset, 1e-3, kind)
    got = start.clone().to(DEVICE)
    seeded.perturb_(got, 2**64 - 5, offset, 1e-3, kind)
    assert torch.equal(got.cpu(), expected)
    assert not torch.equal(got.cpu(), start)


@pytest.mark.usefixtures("force_triton")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_triton_replay_equals_reference(kind: str, offset: int) -> None:
    start = torch.randn(N, generator=torch.Generator().manual_seed(2))
    seeds = [1, 2**63 + 7, 99, 2**64 - 1, 5]
    # Magnitudes far apart, so the sum's rounding depends on the order of the seeds.
    coeffs = [0.3, -1e-4, 2.5, 7e-7, -3.0]
    expected = start.clone()
    reference.replay_(expected, offset, seeds, torch.tensor(coeffs), kind)
    got = start.clone().to(DEVICE)
    seeded.replay_(got, offset, seeds, coeffs, kind)
    assert torch.equal(got.cpu(), expected)
    # Sanity: the replay is the sum of rounded scaled z's (not a no-op, not one seed).
    manual = torch.zeros(N)
    for s, c in zip(seeds, coeffs, strict=True):
        manual += perturbation(s, offset, N, kind) * torch.tensor(c, dtype=torch.float32)
    assert torch.equal(got.cpu(), start + manual)


def test_replay_without_fma_differs_from_fused_arithmetic() -> None:
    # The contract keeps mul and add separate; an FMA would round once and give other bits.
    z = perturbation(9, 0, 4096, "irwin_hall").double()
    w = torch.randn(4096, generator=torch.Generator().manual_seed(3))
    c = 1.2345678e-3
    separate = w + (z.float() * torch.tensor(c, dtype=torch.float32))
    fused = (w.double() + z * torch.tensor(c, dtype=torch.float32).double()).float()
    assert not torch.equal(separate, fused)


@pytest.mark.parametrize("kind", KINDS)
def test_seed_ops_take_the_triton_path_bit_identically(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = torch.Generator().manual_seed(4)
    named = {"b": torch.randn(5, 7, generator=gen), "a": torch.randn(300, generator=gen)}
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("FEDFT_KERNELS", backend)
        tensors = {k: v.clone().to(DEVICE) for k, v in named.items()}
        params = FlatParams(tensors)
        perturb_(params, 77, 1e-2, kind)
        apply_seeds_(params, [5, 6, 2**64 - 2], [0.5, -0.25, 1e-3], kind, start=100, end=320)
        results[backend] = {k: v.cpu() for k, v in tensors.items()}
    for name in named:
        assert torch.equal(results["torch"][name], results["triton"][name])
    assert not torch.equal(results["triton"]["a"], named["a"])


def test_seeded_ops_check_their_inputs() -> None:
    with pytest.raises(ValueError, match="float32"):
        seeded.perturb_(torch.zeros(4, dtype=torch.float16), 1, 0, 1.0)
    with pytest.raises(ValueError, match="kind"):
        seeded.fill(torch.zeros(4), 1, 0, "gaussian")
    with pytest.raises(ValueError, match="2\\*\\*64"):
        seeded.fill(torch.zeros(4), 1, 2**64 - 2)
    with pytest.raises(ValueError, match="coefficients"):
        seeded.replay_(torch.zeros(4), 0, [1, 2], [0.5])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_gpu_z_equals_cpu_reference_bit_for_bit(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the GPU: compiled kernels (not the interpreter) reproduce the CPU contract exactly."""
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    n = 3 * 2**20 + 17
    for seed, offset in [(0, 0), (2**64 - 1, 2**32 - 1000), (derive_seed(1, 2), 2**63 + 3)]:
        z = seeded.fill(torch.empty(n, device="cuda"), seed, offset, kind)
        assert torch.equal(z.cpu(), perturbation(seed, offset, n, kind))
        w = torch.randn(n, generator=torch.Generator().manual_seed(seed % 1000))
        expected = w.clone()
        reference.replay_(expected, offset, [seed, 3, 4], torch.tensor([1e-3, -2.0, 0.7]), kind)
        got = w.cuda()
        seeded.replay_(got, offset, [seed, 3, 4], [1e-3, -2.0, 0.7], kind)
        assert torch.equal(got.cpu(), expected)
