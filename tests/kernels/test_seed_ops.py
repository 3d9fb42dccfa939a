"""Tests for the seed-addressed parameter ops: each op against a reference built on core.rng."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedft.core.rng import KINDS, derive_seed, perturbation
from fedft.kernels.dispatch import ENV_KERNELS, ENV_LEGACY_RNG
from fedft.kernels.seed_ops import FlatParams, apply_seeds_, direction, perturb_, project

SEEDS = [0, 12345, derive_seed(3, 1, 4), 2**64 - 1]
# Names chosen so that sorted (code point) order differs from insertion order: "layer.10" sorts
# before "layer.2", "b" before "w", and the scalar "z" last.
SHAPES: dict[str, tuple[int, ...]] = {
    "w": (3, 5),
    "layer.2": (7,),
    "b": (2, 2, 2),
    "layer.10": (1, 3),
    "z": (),
}
SORTED = ["b", "layer.10", "layer.2", "w", "z"]
TOTAL = 8 + 3 + 7 + 15 + 1


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Same as tests/kernels/test_rng_cpu.py: default backend choice, one thread on shared cores.
    for name in (ENV_KERNELS, ENV_LEGACY_RNG):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_named(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def clone(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in named.items()}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    # torch.equal would accept -0.0 for +0.0; the contract is bit for bit.
    return a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def assert_same_params(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected)
    for name, tensor in got.items():
        assert same_bits(tensor, expected[name]), name


def fp32(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


def z_of(params: FlatParams, seed: int, name: str, kind: str) -> torch.Tensor:
    """Reference z of one parameter: the slice of the global stream at its layout offset."""
    entry = params.layout.entry(name)
    return perturbation(seed, params.layout.offset(name), entry.numel, kind).view(entry.shape)


# --- FlatParams --------------------------------------------------------------------------------


def test_layout_is_sorted_by_name_with_cumulative_offsets() -> None:
    params = FlatParams(make_named())
    assert list(params.layout.names) == SORTED
    assert params.total == TOTAL
    offsets = [params.layout.offset(n) for n in SORTED]
    assert offsets == [0, 8, 11, 18, 33]


def test_rejects_bf16_with_a_message_about_fp32() -> None:
    named = make_named()
    named["layer.2"] = named["layer.2"].to(torch.bfloat16)
    with pytest.raises(ValueError, match="fp32") as info:
        FlatParams(named)
    assert "layer.2" in str(info.value)
    named["layer.2"] = named["layer.2"].to(torch.float64)
    with pytest.raises(ValueError, match="fp32"):
        FlatParams(named)


def test_rejects_non_contiguous_tensors() -> None:
    named = make_named()
    named["w"] = torch.randn(5, 3).t()
    with pytest.raises(ValueError, match="contiguous"):
        FlatParams(named)


def test_snapshot_is_a_copy_in_layout_order_and_restore_roundtrips() -> None:
    named = make_named()
    params = FlatParams(named)
    snap = params.snapshot()
    assert snap.dtype == torch.float32
    assert torch.equal(snap, torch.cat([named[n].reshape(-1) for n in SORTED]))
    original = clone(named)
    for tensor in named.values():
        tensor.add_(1.0)
    assert torch.equal(snap, torch.cat([original[n].reshape(-1) for n in SORTED]))  # a copy
    params.restore(snap)
    assert_same_params(named, original)
    with pytest.raises(ValueError, match="expected"):
        params.restore(snap[:-1])


def test_views_share_storage_with_the_parameters() -> None:
    named = make_named()
    params = FlatParams(named)
    for _, _, parts in params.windows():
        for _, view in parts:
            view.fill_(7.0)
    assert all(bool((t == 7.0).all()) for t in named.values())


# --- windows -----------------------------------------------------------------------------------


def indexed_params() -> FlatParams:
    """Parameters whose values are their own global positions (exact in fp32)."""
    named = {name: torch.empty(shape) for name, shape in SHAPES.items()}
    params = FlatParams(named)
    for entry in params.layout:
        named[entry.name].copy_(
            torch.arange(entry.offset, entry.offset + entry.numel, dtype=torch.float32).view(
                entry.shape
            )
        )
    return params


@pytest.mark.parametrize("chunk", [1, 4, 5, 7, TOTAL, 1000])
def test_windows_cover_every_element_once_for_every_range(chunk: int) -> None:
    params = indexed_params()
    for start in range(TOTAL + 1):
        for end in range(start, TOTAL + 1):
            seen: list[torch.Tensor] = []
            expected_offset = start
            for offset, n, parts in params.windows(start, end, chunk):
                assert offset == expected_offset
                assert 1 <= n <= chunk
                assert offset + n <= end
                pos = 0
                for part_pos, view in parts:
                    # Parts tile the window left to right, and each view holds the positions
                    # it claims: that is coverage, order and mapping in one check.
                    assert part_pos == pos
                    assert view.numel() > 0
                    want = torch.arange(offset + pos, offset + pos + view.numel())
                    assert torch.equal(view, want.to(torch.float32))
                    pos += view.numel()
                    seen.append(view)
                assert pos == n
                expected_offset += n
            assert expected_offset == end
            covered = torch.cat(seen) if seen else torch.zeros(0)
            assert torch.equal(covered, torch.arange(start, end, dtype=torch.float32))


def test_windows_default_range_is_everything() -> None:
    params = indexed_params()
    windows = list(params.windows())
    assert [(o, n) for o, n, _ in windows] == [(0, TOTAL)]
    assert len(windows[0][2]) == len(SHAPES)


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (0, TOTAL + 1), (6, 5), (TOTAL + 1, None)])
def test_windows_reject_ranges_outside_the_stream(start: int, end: int | None) -> None:
    params = indexed_params()
    with pytest.raises(ValueError, match="outside"):
        list(params.windows(start, end))


def test_zero_size_parameters_are_skipped() -> None:
    named = {"a": torch.ones(3), "b": torch.ones(0), "c": torch.ones(2), "d": torch.ones(0)}
    params = FlatParams(named)
    assert params.total == 5
    for start in range(6):
        for end in range(start, 6):
            got = sum(v.numel() for _, _, parts in params.windows(start, end, 2) for _, v in parts)
            assert got == end - start


# --- perturb_ ----------------------------------------------------------------------------------


def reference_perturb(
    named: dict[str, torch.Tensor], seed: int, alpha: float, kind: str
) -> dict[str, torch.Tensor]:
    params = FlatParams(clone(named))
    return {n: named[n] + z_of(params, seed, n, kind) * fp32(alpha) for n in named}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_perturb_matches_the_reference_for_every_chunk(kind: str, seed: int) -> None:
    named = make_named(1)
    alpha = 1e-3 / 3  # not representable: the op must round it to fp32 first, as the reference
    expected = reference_perturb(named, seed, alpha, kind)
    for chunk in (None, 4, 5, 1):
        work = clone(named)
        if chunk is None:
            perturb_(FlatParams(work), seed, alpha, kind)
        else:
            perturb_(FlatParams(work), seed, alpha, kind, chunk=chunk)
        assert_same_params(work, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_perturb_with_cached_direction_gives_the_same_bits(kind: str) -> None:
    named = make_named(2)
    seed = SEEDS[2]
    cached = direction(FlatParams(named), seed, kind)
    assert same_bits(cached, perturbation(seed, 0, TOTAL, kind))
    for alpha in (1e-3, -2.5, 0.1):
        plain, with_cache = clone(named), clone(named)
        perturb_(FlatParams(plain), seed, alpha, kind)
        perturb_(FlatParams(with_cache), seed, alpha, kind, cached=cached, chunk=4)
        assert_same_params(with_cache, plain)
    # The cache itself is not modified by the op.
    assert same_bits(cached, perturbation(seed, 0, TOTAL, kind))


def test_perturb_then_its_negation_restores_the_weights_within_rounding() -> None:
    # +alpha then -alpha is exact only up to the fp32 rounding of each p + alpha z.
    named = make_named(3)
    work = clone(named)
    params = FlatParams(work)
    perturb_(params, 7, 0.01, "irwin_hall")
    assert not torch.equal(work["w"], named["w"])
    perturb_(params, 7, -0.01, "irwin_hall")
    for name in named:
        torch.testing.assert_close(work[name], named[name], rtol=0, atol=1e-6)


# --- apply_seeds_ ------------------------------------------------------------------------------


def reference_apply(
    named: dict[str, torch.Tensor], seeds: list[int], coeffs: list[float], kind: str
) -> dict[str, torch.Tensor]:
    """Return p + sum_k fp32(z_k * fp32(c_k)), summed in the given order, then added once."""
    params = FlatParams(clone(named))
    out = {}
    for name, tensor in named.items():
        acc = torch.zeros(SHAPES[name], dtype=torch.float32)
        for seed, coeff in zip(seeds, coeffs, strict=True):
            acc = acc + z_of(params, seed, name, kind) * fp32(coeff)
        out[name] = tensor + acc
    return out


APPLY_SEEDS = [SEEDS[1], SEEDS[2], SEEDS[3], SEEDS[1]]  # a repeated seed is just another term
APPLY_COEFFS = [0.1, -1e-3 / 3, 3.3, 2.0**-20]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [None, 4, 5])
def test_apply_seeds_matches_the_ordered_reference(kind: str, chunk: int | None) -> None:
    named = make_named(4)
    expected = reference_apply(named, APPLY_SEEDS, APPLY_COEFFS, kind)
    work = clone(named)
    if chunk is None:
        apply_seeds_(FlatParams(work), APPLY_SEEDS, APPLY_COEFFS, kind)
    else:
        apply_seeds_(FlatParams(work), APPLY_SEEDS, APPLY_COEFFS, kind, chunk=chunk)
    assert_same_params(work, expected)


def test_apply_seeds_writes_once_rather_than_seed_by_seed() -> None:
    # Adding each scaled z to the weights in turn rounds after every seed; the op must sum the
    # seeds first. With these weights the two differ somewhere, so this pins the documented order.
    named = {n: t * 1000.0 for n, t in make_named(5).items()}
    expected = reference_apply(named, APPLY_SEEDS, APPLY_COEFFS, "irwin_hall")
    sequential = clone(named)
    for seed, coeff in zip(APPLY_SEEDS, APPLY_COEFFS, strict=True):
        perturb_(FlatParams(sequential), seed, coeff, "irwin_hall")
    work = clone(named)
    apply_seeds_(FlatParams(work), APPLY_SEEDS, APPLY_COEFFS, "irwin_hall")
    assert_same_params(work, expected)
    assert any(not same_bits(sequential[n], work[n]) for n in named)


def test_apply_seeds_of_one_seed_equals_perturb() -> None:
    named = make_named(6)
    a, b = clone(named), clone(named)
    apply_seeds_(FlatParams(a), [SEEDS[2]], [0.37], "rademacher", chunk=4)
    perturb_(FlatParams(b), SEEDS[2], 0.37, "rademacher")
    assert_same_params(a, b)


@pytest.mark.parametrize(("start", "end"), [(0, TOTAL), (2, 9), (9, 30), (13, 14), (10, 10)])
def test_apply_seeds_restricted_to_a_range_leaves_the_rest_untouched(start: int, end: int) -> None:
    named = make_named(7)
    full = reference_apply(named, APPLY_SEEDS, APPLY_COEFFS, "irwin_hall")
    work = clone(named)
    params = FlatParams(work)
    apply_seeds_(params, APPLY_SEEDS, APPLY_COEFFS, "irwin_hall", start=start, end=end, chunk=4)
    got = params.snapshot()
    before = FlatParams(named).snapshot()
    want = FlatParams(full).snapshot()
    assert same_bits(got[start:end], want[start:end])
    assert same_bits(got[:start], before[:start])
    assert same_bits(got[end:], before[end:])


def test_apply_seeds_rejects_mismatched_lengths_and_ignores_no_seeds() -> None:
    named = make_named(8)
    work = clone(named)
    with pytest.raises(ValueError, match="coefficients"):
        apply_seeds_(FlatParams(work), [1, 2], [0.5], "irwin_hall")
    with pytest.raises(ValueError, match="coefficients"):
        apply_seeds_(FlatParams(work), [], [0.5], "irwin_hall")
    apply_seeds_(FlatParams(work), [], [], "irwin_hall")
    assert_same_params(work, named)


def test_apply_seeds_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError, match="outside"):
        apply_seeds_(FlatParams(make_named()), [1], [1.0], "irwin_hall", start=3, end=TOTAL + 1)


# --- project -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("base_offset", [0, 12345, 2**32 - 3])
def test_project_is_the_float64_dot_with_the_stream_slice(kind: str, base_offset: int) -> None:
    vector = torch.randn(37, generator=torch.Generator().manual_seed(9))
    expected = torch.tensor(
        [
            float(torch.dot(vector.double(), perturbation(s, base_offset, 37, kind).double()))
            for s in SEEDS
        ],
        dtype=torch.float64,
    )
    for chunk in (None, 1, 4, 5, 36):
        if chunk is None:
            got = project(vector, base_offset, SEEDS, kind)
        else:
            got = project(vector, base_offset, SEEDS, kind, chunk=chunk)
        assert got.dtype == torch.float64
        assert got.shape == (len(SEEDS),)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_project_accepts_any_shape_and_is_the_adjoint_of_apply_seeds() -> None:
    # <v, sum_k c_k z_k> == sum_k c_k <v, z_k>: projecting is the adjoint of replaying seeds.
    named = {n: torch.zeros(s) for n, s in SHAPES.items()}
    params = FlatParams(named)
    seeds, coeffs = SEEDS[:3], [0.5, -0.25, 2.0]
    apply_seeds_(params, seeds, coeffs, "irwin_hall", start=8, end=28)
    v = torch.randn(4, 5, generator=torch.Generator().manual_seed(10))
    lhs = float(torch.dot(v.reshape(-1).double(), params.snapshot()[8:28].double()))
    dots = project(v, 8, seeds, "irwin_hall")
    rhs = sum(c * float(d) for c, d in zip(coeffs, dots, strict=True))
    assert lhs == pytest.approx(rhs, rel=1e-6, abs=1e-6)


def test_project_of_an_empty_vector_or_no_seeds() -> None:
    assert torch.equal(project(torch.zeros(0), 5, SEEDS, "rademacher"), torch.zeros(len(SEEDS)))
    assert project(torch.ones(3), 0, [], "rademacher").shape == (0,)
