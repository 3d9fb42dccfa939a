"""Tests for the fast CPU perturbation fill: bit-identical to core.rng, backend choice, errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedft.core.errors import UsageError
from fedft.core.rng import KINDS, derive_seed, perturbation
from fedft.kernels import rng_cpu
from fedft.kernels.dispatch import ENV_KERNELS, ENV_LEGACY_RNG, KernelUnavailableError
from fedft.kernels.rng_cpu import backend_name, fill_perturbation

SEEDS = [0, 12345, derive_seed(7, 3, 1), 2**63, 2**64 - 1]
# 2**32 - 5 makes every size above 5 cross the counter's first high-word step.
OFFSETS = [0, 12345, 2**32 - 5, 2**40 + 17]
SIZES = [1, 7, 1000, 300_000]
# "dispatch" is the public entry point; the other two call the compiled kernel's paths directly.
PATHS = ["dispatch", "compiled", "compiled-portable"]
HAS_COMPILER = rng_cpu._compiler() is not None


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A developer's FEDFT_KERNELS must not change what these tests exercise; one thread as in
    # tests/core/test_rng.py, because torch's OpenMP barriers stall on oversubscribed CI cores.
    for name in (ENV_KERNELS, ENV_LEGACY_RNG):
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fill_with(path: str) -> Callable[[int, int, torch.Tensor, str], torch.Tensor]:
    """Return a fill function for one path; without a compiler every path is the fallback."""
    kernel = rng_cpu._kernel_or_reason()
    if path == "dispatch" or isinstance(kernel, str):
        return fill_perturbation

    def fill(seed: int, offset: int, out: torch.Tensor, kind: str) -> torch.Tensor:
        rng_cpu._fill_compiled(kernel, seed, offset, out, kind, portable=path.endswith("portable"))
        return out

    return fill


def assert_same_bits(got: torch.Tensor, expected: torch.Tensor) -> None:
    # Compare bit patterns: torch.equal would accept -0.0 for +0.0.
    assert got.shape == expected.shape
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_compiled_backend_is_used_where_a_compiler_exists() -> None:
    # Guards against a silent fallback hiding a broken kernel on machines that can build it.
    if not HAS_COMPILER:
        assert backend_name() == "torch"
        return
    kernel = rng_cpu._kernel_or_reason()
    assert not isinstance(kernel, str), kernel
    assert backend_name() == f"compiled-{kernel.isa}"
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert kernel.isa == "avx2"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_bit_identical_to_reference(path: str, kind: str, offset: int) -> None:
    fill = fill_with(path)
    for seed in SEEDS:
        for n in SIZES:
            expected = perturbation(seed, offset, n, kind)
            out = torch.full((n,), float("nan"))
            assert fill(seed, offset, out, kind) is out
            assert_same_bits(out, expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_end_of_counter_space(path: str, kind: str) -> None:
    # The last 1000 offsets below 2**64, and a span across the high word's last step.
    for offset, n in ((2**64 - 1000, 1000), (2**64 - 2**32 - 50, 100)):
        out = torch.empty(n)
        fill_with(path)(2**64 - 1, offset, out, kind)
        assert_same_bits(out, perturbation(2**64 - 1, offset, n, kind))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    offset=st.one_of(
        st.integers(0, 2**64 - 200),
        st.sampled_from([2**32 - 40, 2**33 - 3, 2**63 - 17]),
    ),
    n=st.integers(0, 200),
    kind=st.sampled_from(KINDS),
    path=st.sampled_from(PATHS),
)
def test_random_spans_match_reference(seed: int, offset: int, n: int, kind: str, path: str) -> None:
    out = torch.empty(n)
    fill_with(path)(seed, offset, out, kind)
    assert_same_bits(out, perturbation(seed, offset, n, kind))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_bits(threads: int) -> None:
    n = (1 << 18) + 13  # several slices per thread plus a partial block at the end
    expected = {kind: perturbation(99, 2**32 - 1000, n, kind) for kind in KINDS}
    torch.set_num_threads(threads)
    for kind in KINDS:
        out = torch.empty(n)
        fill_perturbation(99, 2**32 - 1000, out, kind)
        assert_same_bits(out, expected[kind])


def test_fills_any_shape_and_views_in_flat_order() -> None:
    out = torch.empty(3, 5, 7)
    fill_perturbation(5, 40, out)
    assert_same_bits(out.view(-1), perturbation(5, 40, 105))
    base = torch.zeros(50)
    fill_perturbation(5, 40, base[10:20], "rademacher")
    assert_same_bits(base[10:20], perturbation(5, 40, 10, "rademacher"))
    assert not base[:10].any()
    assert not base[20:].any()
    empty = torch.empty(0)
    assert fill_perturbation(5, 2**64, empty) is empty  # offset + numel == 2**64 is allowed


def test_autograd_sees_the_write() -> None:
    out = torch.zeros(10)
    version = out._version
    fill_perturbation(1, 0, out)
    assert out._version > version
    param = torch.zeros(10, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        perturbation(1, 0, 10, out=param)
    with pytest.raises(RuntimeError, match="in-place"):
        fill_perturbation(1, 0, param)
    with torch.no_grad():
        fill_perturbation(1, 0, param)
    assert_same_bits(param.detach(), perturbation(1, 0, 10))
    with torch.inference_mode():
        inference = torch.empty(10)
        fill_perturbation(1, 0, inference)
    assert_same_bits(inference, perturbation(1, 0, 10))


def test_explicit_torch_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KERNELS, "torch")
    assert backend_name() == "torch"
    for kind in KINDS:
        out = torch.empty(1000)
        fill_perturbation(2**63 + 1, 2**32 - 5, out, kind)
        assert_same_bits(out, perturbation(2**63 + 1, 2**32 - 5, 1000, kind))


def test_explicit_compiled_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KERNELS, " Compiled ")
    if not HAS_COMPILER:
        with pytest.raises(KernelUnavailableError, match="no C\\+\\+ compiler"):
            backend_name()
        return
    assert backend_name().startswith("compiled-")
    out = torch.empty(1000)
    fill_perturbation(3, 2**40 + 17, out)
    assert_same_bits(out, perturbation(3, 2**40 + 17, 1000))


def test_unavailable_kernel_falls_back_or_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rng_cpu, "_kernel", "no C++ compiler found (test)")
    assert backend_name() == "torch"
    out = torch.empty(1000)
    fill_perturbation(3, 2**32 - 5, out, "rademacher")
    assert_same_bits(out, perturbation(3, 2**32 - 5, 1000, "rademacher"))
    monkeypatch.setenv(ENV_KERNELS, "compiled")
    with pytest.raises(KernelUnavailableError, match=r"FEDFT_KERNELS=compiled.*\(test\)"):
        fill_perturbation(3, 0, out)
    with pytest.raises(KernelUnavailableError):
        backend_name()
    # Asking for Triton leaves the CPU fill on auto: it falls back as before.
    monkeypatch.setenv(ENV_KERNELS, "triton")
    assert backend_name() == "torch"


def test_invalid_backend_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KERNELS, "cuda")
    with pytest.raises(UsageError, match="FEDFT_KERNELS='cuda' is not one of"):
        fill_perturbation(0, 0, torch.empty(4))


def test_the_deprecated_variable_still_works_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rng_cpu, "_kernel", "no C++ compiler found (test)")
    monkeypatch.setenv(ENV_LEGACY_RNG, "compiled")
    with (
        pytest.warns(FutureWarning, match="FEDFT_RNG_BACKEND is deprecated"),
        pytest.raises(KernelUnavailableError, match=r"FEDFT_RNG_BACKEND=compiled.*\(test\)"),
    ):
        fill_perturbation(3, 0, torch.empty(4))
    monkeypatch.setenv(ENV_LEGACY_RNG, "triton")
    with pytest.raises(UsageError, match="FEDFT_RNG_BACKEND='triton' is not one of"):
        fill_perturbation(0, 0, torch.empty(4))
    # The new switch wins, silently.
    monkeypatch.setenv(ENV_KERNELS, "auto")
    assert backend_name() == "torch"


def test_missing_or_broken_compiler_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEDFT_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "fedft-no-such-compiler")
    reason = rng_cpu._load_kernel()
    assert isinstance(reason, str)
    assert "no C++ compiler" in reason
    monkeypatch.setenv("CXX", "false")  # exists everywhere and always fails
    reason = rng_cpu._load_kernel()
    assert isinstance(reason, str)
    assert "failed" in reason
    assert "\n" not in reason  # it may become a one-line UsageError
    assert not list((tmp_path / "kernels").glob("*.so"))


@pytest.mark.skipif(not HAS_COMPILER, reason="building the kernel needs a C++ compiler")
def test_kernel_is_built_once_into_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FEDFT_CACHE", str(tmp_path))
    stale = tmp_path / "kernels" / f"rng_cpu-{sys.platform}-0000000000000000.so"
    stale.parent.mkdir()
    stale.write_bytes(b"built by an older fedft")
    first = rng_cpu._load_kernel()
    assert not isinstance(first, str), first
    assert first.path.parent == tmp_path / "kernels"
    # No build leftovers, and the older build is gone.
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]
    built = os.stat(first.path).st_mtime_ns
    second = rng_cpu._load_kernel()
    assert not isinstance(second, str)
    assert second.path == first.path
    assert os.stat(second.path).st_mtime_ns == built  # loaded from the cache, not rebuilt
    out = torch.empty(300_000)
    rng_cpu._fill_compiled(second, 11, 2**32 - 5, out, "irwin_hall", portable=False)
    assert_same_bits(out, perturbation(11, 2**32 - 5, 300_000))


BAD_CALLS: list[tuple[str, int, int, Callable[[], torch.Tensor], str]] = [
    # (why, seed, offset, out factory, kind)
    ("kind", 1, 0, lambda: torch.empty(4), "gaussian"),
    ("dtype", 1, 0, lambda: torch.empty(4, dtype=torch.float64), "irwin_hall"),
    ("int dtype", 1, 0, lambda: torch.empty(4, dtype=torch.int32), "rademacher"),
    ("strided", 1, 0, lambda: torch.empty(4, 4).t(), "irwin_hall"),
    ("device", 1, 0, lambda: torch.empty(4, device="meta"), "irwin_hall"),
    ("negative seed", -1, 0, lambda: torch.empty(4), "irwin_hall"),
    ("seed too big", 2**64, 0, lambda: torch.empty(4), "irwin_hall"),
    ("bad seed, empty out", -1, 0, lambda: torch.empty(0), "irwin_hall"),
    ("negative offset", 1, -1, lambda: torch.empty(4), "irwin_hall"),
    ("past 2**64", 1, 2**64 - 3, lambda: torch.empty(4), "rademacher"),
]


@pytest.mark.parametrize(("why", "seed", "offset", "make_out", "kind"), BAD_CALLS)
def test_errors_match_reference(
    why: str, seed: int, offset: int, make_out: Callable[[], torch.Tensor], kind: str
) -> None:
    out = make_out()
    with pytest.raises((ValueError, TypeError)) as expected:
        perturbation(seed, offset, out.numel(), kind, out=out)
    with pytest.raises(expected.type, match=None) as got:
        fill_perturbation(seed, offset, out, kind)
    assert str(got.value) == str(expected.value), why


@pytest.mark.parametrize(("seed", "offset"), [(True, 0), (1.5, 0), (1, 2.0)])
def test_non_int_arguments_are_type_errors(seed: object, offset: object) -> None:
    with pytest.raises(TypeError):
        perturbation(seed, offset, 4, out=torch.empty(4))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fill_perturbation(seed, offset, torch.empty(4))  # type: ignore[arg-type]


def test_the_cpp_source_ships_beside_the_module_with_the_contract_constants() -> None:
    source = rng_cpu._source()
    assert "fedft_rng_fill" in source
    assert "@" not in source  # every placeholder was filled
    assert f"W0 = {rng_cpu.PHILOX_W0}u" in source
