"""Tests for the seeded-randomness contract: Philox4x32-10, perturbation kinds, layout, seeds."""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedft.core.rng import (
    DEFAULT_CHUNK,
    IRWIN_HALL_SCALE,
    KINDS,
    ParameterLayout,
    derive_seed,
    perturbation,
    philox4x32,
    philox_words,
    validate_seed,
)

MASK = 0xFFFFFFFF
U32 = st.integers(0, MASK)
U64 = st.integers(0, 2**64 - 1)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    # OpenMP barriers stall for whole time slices when CI oversubscribes the cores (measured 100x
    # slower); the bits do not depend on the thread count (see test_thread_count_...).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_philox(ctr: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, ...]:
    """Textbook Philox4x32-10 on Python ints, written independently of the torch version."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        prod0 = 0xD2511F53 * c0
        prod1 = 0xCD9E8D57 * c2
        hi0, lo0 = prod0 // 2**32, prod0 % 2**32
        hi1, lo1 = prod1 // 2**32, prod1 % 2**32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + 0x9E3779B9) % 2**32
        k1 = (k1 + 0xBB67AE85) % 2**32
    return c0, c1, c2, c3


def naive_words(seed: int, offset: int) -> tuple[int, ...]:
    return naive_philox((offset % 2**32, offset // 2**32, 0, 0), (seed % 2**32, seed // 2**32))


def naive_z(seed: int, offset: int, kind: str) -> float:
    words = naive_words(seed, offset)
    if kind == "rademacher":
        return -1.0 if words[0] % 2 else 1.0
    halves = sum(w % 65536 + w // 65536 for w in words)
    # v * C is exact in float64 (20 + 24 significant bits), so one rounding to float32 remains.
    return float(np.float32((2 * halves - 8 * 65535) * IRWIN_HALL_SCALE))


# Random123 known-answer vectors for philox4x32_10 (kat_vectors).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("ctr", "key", "expected"), KAT)
def test_random123_known_answers(
    ctr: tuple[int, int, int, int], key: tuple[int, int], expected: tuple[int, ...]
) -> None:
    assert naive_philox(ctr, key) == expected
    a, b, c, d = (torch.tensor([x]) for x in ctr)
    tensors = philox4x32((a, b, c, d), key)
    assert tuple(int(t.item()) for t in tensors) == expected
    assert tuple(int(t.item()) for t in philox4x32(ctr, key)) == expected


@settings(max_examples=40, deadline=None)
@given(
    ctrs=st.lists(st.tuples(U32, U32, U32, U32), min_size=1, max_size=16), key=st.tuples(U32, U32)
)
def test_philox_matches_naive(ctrs: list[tuple[int, int, int, int]], key: tuple[int, int]) -> None:
    columns = [torch.tensor([c[i] for c in ctrs]) for i in range(4)]
    got = torch.stack(
        philox4x32((columns[0], columns[1], columns[2], columns[3]), key), dim=1
    ).tolist()
    assert [tuple(row) for row in got] == [naive_philox(c, key) for c in ctrs]


# Offsets include spans across the counter's 2**32 boundaries, where the high word changes.
BOUNDARIES = st.sampled_from([2**32 - 8, 2**33 - 3, 2**63 - 5, 2**64 - 16])


@settings(max_examples=25, deadline=None)
@given(seed=U64, offset=st.one_of(st.integers(0, 2**64 - 16), BOUNDARIES), n=st.integers(1, 16))
def test_words_and_z_match_naive(seed: int, offset: int, n: int) -> None:
    words = philox_words(seed, offset, n, chunk=5)
    assert [tuple(r) for r in words.tolist()] == [naive_words(seed, offset + i) for i in range(n)]
    for kind in KINDS:
        expected = torch.tensor([naive_z(seed, offset + i, kind) for i in range(n)])
        assert torch.equal(perturbation(seed, offset, n, kind, chunk=3), expected)


def test_philox_does_not_modify_inputs_and_broadcasts() -> None:
    c0 = torch.arange(5)
    before = c0.clone()
    out = philox4x32((c0, 0, torch.tensor([[7]]), 0), (1, 2))
    assert torch.equal(c0, before)
    assert all(t.shape == (1, 5) for t in out)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        philox4x32((0, 0, 0, 0), (2**32, 0))
    with pytest.raises(ValueError, match="counter"):
        philox4x32((0, -1, 0, 0), (0, 0))


GOLDEN_WORDS = {
    0x0: (
        (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8),
        (0xF8E4CCA4, 0x5CB200DB, 0xB1A574EB, 0x097EFF67),
        (0x04FAA329, 0x51C732A6, 0x241513AD, 0x459135E4),
        (0xC990EF29, 0x6A4474A6, 0x9AC9134F, 0x6D413E04),
        (0xEF3DC354, 0xB193F16E, 0xF12F66BC, 0xEABEFD5A),
        (0x734893FB, 0x071A9632, 0xAB97539A, 0x5AFFD9E7),
        (0xB6AF4BF8, 0xCEB08C33, 0xD462DB1C, 0x08D74FA0),
        (0xA8B31D31, 0x0AE45C73, 0xB856E2F8, 0x73DDF25E),
        (0x6AD0C5EC, 0xEA236249, 0x73A459F5, 0x074944B3),
        (0x6DA11836, 0xE4C29D23, 0xFC0D53EE, 0x645D5243),
        (0x183C90A5, 0x86D26AAD, 0x50B745FC, 0x852D572E),
        (0xA0AABE38, 0xBC1F7AC0, 0x1479CF2D, 0x5F4B4810),
        (0xB3F0E797, 0x8935D150, 0x1FE70542, 0x678B60AE),
        (0xAC2FBCCA, 0x3B76C518, 0xFB062940, 0x826DF881),
        (0x641D9BF7, 0xAEC06FAD, 0x4F9C55AF, 0x6602754A),
        (0x5FB3D869, 0x0E2FE67C, 0x89CD8BDB, 0x25420A66),
    ),
    0x0123456789ABCDEF: (
        (0xB850222E, 0xC58CB04B, 0x14A7A020, 0x7A84FFF9),
        (0xADCA1466, 0x523E0D85, 0x65401425, 0xB299DA3F),
        (0xF7CE299F, 0x823CCB40, 0x4FEFE3CC, 0x1A8FE6B6),
        (0xAC3078F0, 0x7FBE88A2, 0x0848E918, 0xFE13862D),
        (0xA02A30B9, 0xD219BBB3, 0xB1CC43EC, 0xAD0CB5EA),
        (0x5765DB8A, 0xD104608F, 0xC658B7D8, 0xE9AA137F),
        (0x5FCA19F9, 0xFA9DD2EC, 0x3FD240CB, 0x9D3AB5E9),
        (0x8E94991C, 0xB890A831, 0xDEF850DE, 0x552B7A90),
        (0xD9412D6A, 0x59DD3F68, 0x9D46A012, 0x5D27DDD9),
        (0x49A122D1, 0x5FE720CB, 0x304577BF, 0x5CB4C92A),
        (0x4743D04B, 0xA665E43B, 0x28A9F5AB, 0x3D9AAB44),
        (0x86CEBF5E, 0x661ED1F2, 0xE7D5160B, 0x8C8B1BF2),
        (0x3BACBC8A, 0xF49A58CE, 0x88272A68, 0xE21243A3),
        (0xB8B243F7, 0xDA8FB9A8, 0x46004299, 0xE54C389C),
        (0x4A4DDC75, 0x15E29283, 0xD1CF459D, 0x4D375F15),
        (0x1AC64C5A, 0xF635A398, 0xDB80F217, 0x339C0261),
    ),
    0xFEDCBA9876543210: (
        (0xBA4B834C, 0x0559BF7F, 0xF35D3E34, 0x349C2AD4),
        (0x29FCC21D, 0x061121EC, 0x300A371D, 0xCF798377),
        (0x55CD7C40, 0x1159E2BE, 0x9EE763F4, 0x8BD139E1),
        (0x61437220, 0xE7889E59, 0x88784476, 0xC6E0CD2E),
        (0x0D519807, 0xB1FFF67E, 0x780AEF91, 0x406C6097),
        (0x56F786FA, 0x26345681, 0xDFB97E83, 0x7D55DA2F),
        (0xB90DA189, 0x9FDBE4F4, 0x1DE8C5CD, 0xABC24C0F),
        (0x96A267ED, 0x7A5744DA, 0x7661DA69, 0x2F248754),
        (0x4F9C6600, 0xB1A460A2, 0xA906582C, 0x075D00DA),
        (0xCC76DCA7, 0x74BDB9FF, 0x105CCD3C, 0x9F21F36F),
        (0x22C2A3D4, 0xB91C9772, 0x35B7AFCC, 0xE0D5A916),
        (0xF6A2D18A, 0xAE3B86E7, 0xC3805A6C, 0xFFCC8A7D),
        (0xF79DF40B, 0x7282B90C, 0xEFB09E47, 0x1DABA6D3),
        (0xA22704C0, 0xC19C9B08, 0xA7A403D5, 0x6E527DCD),
        (0x63CC249B, 0xB8F4C4AE, 0xA68C7E19, 0x5B2FCCE3),
        (0x2A396B40, 0x476FD391, 0xCD868A45, 0x060DCE81),
    ),
}


@pytest.mark.parametrize("seed", list(GOLDEN_WORDS))
def test_golden_words(seed: int) -> None:
    """Offsets 0..7 then 2**32 + 0..7; any change here breaks every stored seed."""
    golden = GOLDEN_WORDS[seed]
    got = [tuple(r) for r in philox_words(seed, 0, 8).tolist()]
    got += [tuple(r) for r in philox_words(seed, 2**32, 8).tolist()]
    assert got == list(golden)
    assert [naive_words(seed, o) for o in [*range(8), *range(2**32, 2**32 + 8)]] == list(golden)


GOLDEN_Z = {
    "irwin_hall": [
        "0x1.389662p-1",
        "-0x1.084bcep+0",
        "0x1.9188d8p-1",
        "0x1.8f9c7ep-1",
        "0x1.c12f4cp-1",
        "0x1.122f5cp+0",
        "0x1.092844p-3",
        "0x1.4d3022p-1",
    ],
    "rademacher": [
        "0x1p+0",
        "0x1p+0",
        "-0x1p+0",
        "0x1p+0",
        "-0x1p+0",
        "0x1p+0",
        "-0x1p+0",
        "0x1p+0",
    ],
}


@pytest.mark.parametrize("kind", KINDS)
def test_golden_z(kind: str) -> None:
    expected = torch.tensor([float.fromhex(h) for h in GOLDEN_Z[kind]], dtype=torch.float32)
    z = perturbation(0x0123456789ABCDEF, 0, 8, kind)
    assert z.dtype == torch.float32
    assert torch.equal(z, expected)


def test_irwin_hall_scale_is_correctly_rounded_float32() -> None:
    exact_square = Fraction(12, 32 * (65536**2 - 1))
    as_float32 = float(np.float32(math.sqrt(12 / (32 * (65536**2 - 1)))))
    assert as_float32 == IRWIN_HALL_SCALE
    # Exact check, immune to double rounding: sqrt(q) lies within half an ulp of the literal.
    mantissa, exponent = math.frexp(IRWIN_HALL_SCALE)
    half_ulp = Fraction(2) ** (exponent - 24) / 2
    scale = Fraction(IRWIN_HALL_SCALE)
    assert mantissa * 2**24 == int(mantissa * 2**24)
    assert (scale - half_ulp) ** 2 < exact_square < (scale + half_ulp) ** 2


@pytest.mark.parametrize("kind", KINDS)
def test_chunking_and_splitting_are_invariant(kind: str) -> None:
    offset, numel = 2**32 - 300, 1000  # crosses the counter's high-word boundary
    ref = perturbation(7, offset, numel, kind)
    for chunk in (1, 7, 64, 299, 300, 301, 4096):
        assert torch.equal(perturbation(7, offset, numel, kind, chunk=chunk), ref)
    parts = [perturbation(7, offset + a, b - a, kind, chunk=50) for a, b in [(0, 123), (123, 1000)]]
    assert torch.equal(torch.cat(parts), ref)
    out = torch.full((numel,), float("nan"))
    assert perturbation(7, offset, numel, kind, out=out) is out
    assert torch.equal(out, ref)


def test_thread_count_does_not_change_bits() -> None:
    one = perturbation(3, 0, 3 * DEFAULT_CHUNK // 2)
    torch.set_num_threads(2)  # the autouse fixture restores the count
    assert torch.equal(perturbation(3, 0, 3 * DEFAULT_CHUNK // 2), one)


def test_statistics() -> None:
    n = 1 << 20
    z = perturbation(20240601, 12345, n).double()
    mean, std = z.mean().item(), z.std().item()
    kurtosis = (((z - mean) / std) ** 4).mean().item() - 3
    assert abs(mean) < 0.005
    assert abs(std - 1) < 0.005
    assert abs(kurtosis + 0.15) < 0.03
    assert z.abs().max().item() <= 524280 * IRWIN_HALL_SCALE
    r = perturbation(20240601, 12345, n, "rademacher")
    assert abs(r.double().mean().item()) < 0.005
    assert torch.equal(r.abs(), torch.ones(n))


def test_streams_differ_by_seed_and_high_offset() -> None:
    a = perturbation(1, 0, 256)
    assert not torch.equal(a, perturbation(2, 0, 256))
    assert not torch.equal(a, perturbation(1, 2**32, 256))
    assert not torch.equal(a, perturbation(1 + 2**32, 0, 256))  # the key's high word matters
    assert (a != perturbation(1, 2**32, 256)).float().mean() > 0.9


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="irwin_hall, rademacher"):
        perturbation(0, 0, 4, "gaussian")
    for bad_seed in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            perturbation(bad_seed, 0, 4)
        with pytest.raises(ValueError, match="seed"):
            validate_seed(bad_seed)
    with pytest.raises(TypeError):
        validate_seed(True)
    assert validate_seed(2**64 - 1) == 2**64 - 1
    with pytest.raises(ValueError, match="offset"):
        perturbation(0, -1, 4)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        perturbation(0, 2**64 - 2, 4)
    with pytest.raises(ValueError, match="chunk"):
        perturbation(0, 0, 4, chunk=0)
    with pytest.raises(ValueError, match="float32"):
        perturbation(0, 0, 4, out=torch.empty(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="elements"):
        perturbation(0, 0, 4, out=torch.empty(5))
    assert perturbation(0, 0, 0).shape == (0,)
    last = perturbation(5, 2**64 - 4, 4, "rademacher")
    assert last.tolist() == [naive_z(5, 2**64 - 4 + i, "rademacher") for i in range(4)]


def test_layout_order_and_offsets() -> None:
    shapes = {"lm_head.weight": (4, 3), "embed.weight": (5, 2), "layers.10.bias": (3,)}
    shapes["layers.9.bias"] = (2,)
    layout = ParameterLayout.from_named(shapes)
    # Python string order: "layers.10" sorts before "layers.9".
    assert layout.names == ("embed.weight", "layers.10.bias", "layers.9.bias", "lm_head.weight")
    assert [e.offset for e in layout] == [0, 10, 13, 15]
    assert layout.offset("lm_head.weight") == 15
    assert layout.total == 27
    assert len(layout) == 4
    assert "embed.weight" in layout
    assert layout.entry("embed.weight").shape == (5, 2)
    from_numels = ParameterLayout.from_numels([("b", 3), ("a", 2)])
    assert [(e.name, e.offset, e.numel) for e in from_numels] == [("a", 0, 2), ("b", 2, 3)]
    # Insertion order must not matter.
    assert ParameterLayout.from_named(dict(reversed(list(shapes.items())))) == layout


def test_layout_perturbation_is_slice_of_global_stream() -> None:
    params = [("w", torch.zeros(3, 4)), ("a.bias", torch.zeros(5)), ("scale", torch.zeros(()))]
    layout = ParameterLayout.from_named(params)
    stream = perturbation(99, 0, layout.total, "rademacher")
    for entry in layout:
        z = layout.perturbation(99, entry.name, "rademacher")
        assert z.shape == entry.shape
        assert torch.equal(z.reshape(-1), stream[entry.offset : entry.offset + entry.numel])


def test_layout_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        ParameterLayout.from_numels([("a", 1), ("a", 2)])
    with pytest.raises(ValueError, match="negative"):
        ParameterLayout.from_numels([("a", -1)])
    with pytest.raises(KeyError, match="missing"):
        ParameterLayout.from_numels([("a", 1)]).offset("missing")


def test_derive_seed() -> None:
    assert derive_seed(42, 7, 3) == 0x409BD93A74C607F5
    assert derive_seed(42, 7, 3) == derive_seed(42, 7, 3)
    seeds = {derive_seed(42, r, c) for r in range(20) for c in range(20)}
    assert len(seeds) == 400
    assert derive_seed(1, 2) != derive_seed(2, 1)
    assert derive_seed(0) != derive_seed(0, 0)
    assert all(0 <= s < 2**64 for s in seeds)
    with pytest.raises(ValueError, match="seed"):
        derive_seed(-1)
    with pytest.raises(ValueError, match="at least one"):
        derive_seed()
