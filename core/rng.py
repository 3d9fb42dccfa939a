"""Seeded perturbation vectors that every device regenerates bit for bit from a 64-bit seed.

The contract, which Triton kernels (CPU interpreter and GPU) must reproduce exactly:

* Generator: Philox4x32-10 (Salmon et al., Random123) with key ``(seed & 0xFFFFFFFF, seed >> 32)``.
  The element at global offset ``i`` (``0 <= i < 2**64``) uses the counter
  ``(i & 0xFFFFFFFF, i >> 32, 0, 0)`` and gets the four output words ``(w0, w1, w2, w3)``.
  In Triton that is ``tl.philox(seed, i_lo, i_hi, 0, 0)`` with all four counter words uint32.
  ``tl.randint4x(seed, i)`` agrees only for int32 offsets (``i < 2**31``): recent Triton runs
  Philox4x64 when the offset is 64-bit, so kernels must split the offset themselves.
* ``"rademacher"``: ``z = +1.0`` if bit 0 of ``w0`` is 0, else ``-1.0``.
* ``"irwin_hall"`` (mean 0, variance 1, excess kurtosis -0.15): ``S`` is the sum of the eight
  16-bit halves of the four words, ``v = 2*S - 8*65535`` is an exact integer with
  ``|v| <= 524280 < 2**24``, and ``z = float32(v) * IRWIN_HALL_SCALE`` is one float32 multiply.
  No sqrt/log/cos at generation time, so every IEEE-754 device gives the same bits.
* Parameter order: a model's trainable parameters are laid out in one global stream sorted by
  parameter name (Python string order, i.e. by code point). Parameter ``p`` covers the offsets
  ``[base(p), base(p) + numel(p))`` where ``base`` is the cumulative numel of the names before it.
  Name order survives refactors that only reorder modules; registration order would not.
* Seeds are ints in ``[0, 2**64)``. :func:`derive_seed` maps integer parts, e.g.
  ``(run_seed, round, client_index)``, to a seed: the first 8 bytes (read little-endian) of
  BLAKE2b with ``digest_size=8`` and ``person=b"fedft.seed"`` over the parts, each written as
  unsigned 8-byte little-endian.

Arithmetic uses int64 tensors that hold uint32 values; the 64-bit products of mulhilo wrap modulo
2**64 (two's complement), which keeps both halves exact.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

import torch

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
# float32 rounding of sqrt(12 / (32 * (65536**2 - 1))); tests prove it is correctly rounded.
IRWIN_HALL_SCALE = float.fromhex("0x1.3988e2p-17")
IRWIN_HALL_SHIFT = 8 * 65535
KINDS = ("irwin_hall", "rademacher")
# Each chunk costs ~130 torch ops of ~2 us fixed overhead, so chunks must be large; 2**18 was the
# fastest on 1 and 2 threads (benchmarks/rng_throughput.py) and needs a 10 MiB int64 workspace.
DEFAULT_CHUNK = 1 << 18
_SEED_LIMIT = 1 << 64

# A Philox word is a tensor, or a Python int while it is still the same for every element
# (the zero counter words and the offset's high word), which skips work in the first rounds.
_Word: TypeAlias = "torch.Tensor | int"


def validate_seed(seed: int) -> int:
    """Return ``seed`` as an int after checking it is an unsigned 64-bit value."""
    if isinstance(seed, bool):
        raise TypeError("seed must be an int, not bool")
    value = operator.index(seed)
    if not 0 <= value < _SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2**64), got {value}")
    return value


def derive_seed(*parts: int) -> int:
    """Derive a 64-bit seed from unsigned 64-bit integer parts (see the module docstring)."""
    if not parts:
        raise ValueError("derive_seed needs at least one part")
    for part in parts:
        if isinstance(part, bool) or not 0 <= operator.index(part) < _SEED_LIMIT:
            raise ValueError(f"derive_seed parts must be ints in [0, 2**64), got {part!r}")
    data = b"".join(operator.index(p).to_bytes(8, "little") for p in parts)
    digest = hashlib.blake2b(data, digest_size=8, person=b"fedft.seed").digest()
    return int.from_bytes(digest, "little")


def _keys(k0: int, k1: int) -> list[tuple[int, int]]:
    keys = []
    for _ in range(PHILOX_ROUNDS):
        keys.append((k0, k1))
        k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
    return keys


def _half_round(
    x: _Word, mult: int, other: _Word, key: int, pool: list[torch.Tensor]
) -> tuple[_Word, _Word]:
    """Return ``(hi(mult*x) ^ other ^ key, lo(mult*x))``, consuming ``x`` and ``other``.

    ``x`` must be clean (in [0, 2**32)). The returned low word is left dirty: only its low 32 bits
    are meaningful, which is all the next round's XOR reads; it skips one mask per half round.
    """
    if isinstance(x, int):
        p = x * mult
        hi = (p >> 32) ^ key
        if isinstance(other, int):
            return other ^ hi, p & MASK32
        return other.bitwise_xor_(hi).bitwise_and_(MASK32), p & MASK32
    prod = x.mul_(mult)
    hi_t = torch.bitwise_right_shift(prod, 32, out=pool.pop())
    if isinstance(other, int):
        hi_t.bitwise_xor_(other ^ key)
    else:
        hi_t.bitwise_xor_(other).bitwise_xor_(key)
        pool.append(other)
    # The arithmetic shift sign-extends and ``other`` may be dirty, but ``hi_t`` is multiplied next.
    return hi_t.bitwise_and_(MASK32), prod


def _rounds(
    words: tuple[_Word, _Word, _Word, _Word],
    k0: int,
    k1: int,
    pool: list[torch.Tensor],
    *,
    first_word_only: bool = False,
) -> tuple[_Word, _Word, _Word, _Word]:
    """Run the ten rounds; returns clean words (only the first if ``first_word_only``)."""
    c0, c1, c2, c3 = words
    keys = _keys(k0, k1)
    for r, (a, b) in enumerate(keys):
        n0, n1 = _half_round(c2, PHILOX_M1, c1, a, pool)
        if first_word_only and r == len(keys) - 1:
            return n0, 0, 0, 0
        n2, n3 = _half_round(c0, PHILOX_M0, c3, b, pool)
        c0, c1, c2, c3 = n0, n1, n2, n3
    if isinstance(c1, torch.Tensor):
        c1.bitwise_and_(MASK32)
    if isinstance(c3, torch.Tensor):
        c3.bitwise_and_(MASK32)
    return c0, c1, c2, c3


def philox4x32(
    counter: tuple[_Word, _Word, _Word, _Word], key: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run Philox4x32-10 on counter words (ints or int64 tensors, broadcast) and two key words."""
    for w in (*counter, *key):
        if isinstance(w, int) and not 0 <= w <= MASK32:
            raise ValueError(f"counter and key words must be in [0, 2**32), got {w}")
    as_tensors = [torch.as_tensor(c, dtype=torch.int64) for c in counter]
    expanded = torch.broadcast_tensors(*as_tensors)  # type: ignore[no-untyped-call]
    shape = expanded[0].shape
    # Private copies, because the rounds update their buffers in place.
    c0, c1, c2, c3 = (
        c if isinstance(c, int) else e.clone() for c, e in zip(counter, expanded, strict=True)
    )
    # Four live words plus one spare for the product's low half.
    spares = 5 - sum(isinstance(c, torch.Tensor) for c in counter)
    pool = [torch.empty(shape, dtype=torch.int64) for _ in range(spares)]
    out = _rounds((c0, c1, c2, c3), key[0], key[1], pool)
    r = [torch.full(shape, w, dtype=torch.int64) if isinstance(w, int) else w for w in out]
    return r[0], r[1], r[2], r[3]


def _pieces(offset: int, numel: int, chunk: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(position, counter_lo, counter_hi, n)``, never crossing a 2**32 boundary."""
    pos = 0
    while pos < numel:
        lo, hi = (offset + pos) & MASK32, (offset + pos) >> 32
        n = min(chunk, numel - pos, (1 << 32) - lo)
        yield pos, lo, hi, n
        pos += n


def _stream(
    seed: int, offset: int, numel: int, chunk: int, *, first_word_only: bool
) -> Iterator[tuple[int, tuple[torch.Tensor, ...], torch.Tensor]]:
    """Yield ``(position, words, spare)`` per piece; the buffers are reused by the next piece."""
    seed = validate_seed(seed)
    offset, numel, chunk = operator.index(offset), operator.index(numel), operator.index(chunk)
    if offset < 0 or numel < 0:
        raise ValueError(f"offset and numel must be >= 0, got offset={offset} numel={numel}")
    if offset + numel > _SEED_LIMIT:
        raise ValueError("offset + numel must not exceed 2**64 (the Philox counter width)")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    work = torch.empty((5, min(chunk, numel)), dtype=torch.int64)
    for pos, lo, hi, n in _pieces(offset, numel, chunk):
        pool = [buf[:n] for buf in work]
        counter = torch.arange(lo, lo + n, dtype=torch.int64, out=pool.pop())
        words = _rounds(
            (counter, hi, 0, 0), seed & MASK32, seed >> 32, pool, first_word_only=first_word_only
        )
        tensors = tuple(w for w in words if isinstance(w, torch.Tensor))
        yield pos, tensors, pool[0]


def philox_words(seed: int, offset: int, numel: int, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Return the words of offsets ``offset..offset+numel-1`` as an int64 (numel, 4) tensor."""
    out = torch.empty((numel, 4), dtype=torch.int64)
    for pos, words, _ in _stream(seed, offset, numel, chunk, first_word_only=False):
        for j, w in enumerate(words):
            out[pos : pos + w.numel(), j] = w
    return out


def _irwin_hall(words: tuple[torch.Tensor, ...], spare: torch.Tensor, out: torch.Tensor) -> None:
    # sum of halves = sum(w) - 65535 * sum(w >> 16), since w = 65536*hi + lo.
    w0, w1, w2, w3 = words
    total = torch.add(w0, w1, out=spare).add_(w2).add_(w3)
    highs = w0.bitwise_right_shift_(16)
    highs.add_(w1.bitwise_right_shift_(16)).add_(w2.bitwise_right_shift_(16))
    highs.add_(w3.bitwise_right_shift_(16))
    total.sub_(highs, alpha=65535).mul_(2).sub_(IRWIN_HALL_SHIFT)
    out.copy_(total).mul_(IRWIN_HALL_SCALE)


def _rademacher(words: tuple[torch.Tensor, ...], spare: torch.Tensor, out: torch.Tensor) -> None:
    bit = torch.bitwise_and(words[0], 1, out=spare)
    out.copy_(bit.mul_(-2).add_(1))


def perturbation(
    seed: int,
    offset: int,
    numel: int,
    kind: str = "irwin_hall",
    *,
    chunk: int = DEFAULT_CHUNK,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return the float32 perturbation z for global offsets ``offset..offset+numel-1`` on CPU."""
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if out is None:
        out = torch.empty(max(numel, 0), dtype=torch.float32)
    elif out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous():
        raise ValueError("out must be a contiguous float32 CPU tensor")
    elif out.numel() != numel:
        raise ValueError(f"out has {out.numel()} elements, expected {numel}")
    flat = out.view(-1)
    emit = _rademacher if kind == "rademacher" else _irwin_hall
    for pos, words, spare in _stream(
        seed, offset, numel, chunk, first_word_only=kind == "rademacher"
    ):
        emit(words, spare, flat[pos : pos + spare.numel()])
    return out


class LayoutEntry(NamedTuple):
    """One parameter's place in the global stream."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class ParameterLayout:
    """Parameters in documented order (sorted by name) with their base offsets in the stream."""

    specs: tuple[tuple[str, tuple[int, ...]], ...]
    total: int = field(init=False)
    _index: dict[str, LayoutEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        specs = tuple(sorted((str(n), tuple(int(d) for d in s)) for n, s in self.specs))
        index: dict[str, LayoutEntry] = {}
        base = 0
        for name, shape in specs:
            if name in index:
                raise ValueError(f"duplicate parameter name {name!r}")
            if any(d < 0 for d in shape):
                raise ValueError(f"parameter {name!r} has a negative dimension: {shape}")
            numel = math.prod(shape)
            index[name] = LayoutEntry(name, shape, base, numel)
            base += numel
        if base > _SEED_LIMIT:
            raise ValueError("layout exceeds 2**64 elements")
        # Frozen dataclass: normalised fields are set once here.
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "total", base)
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_numels(cls, pairs: Iterable[tuple[str, int]]) -> ParameterLayout:
        """Build a layout of flat parameters from ``(name, numel)`` pairs."""
        return cls(tuple((name, (int(numel),)) for name, numel in pairs))

    @classmethod
    def from_named(
        cls,
        params: Mapping[str, torch.Tensor | Sequence[int]]
        | Iterable[tuple[str, torch.Tensor | Sequence[int]]],
    ) -> ParameterLayout:
        """Build a layout from name -> tensor/shape, e.g. ``dict(model.named_parameters())``."""
        items = params.items() if isinstance(params, Mapping) else params
        return cls(
            tuple(
                (name, tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v))
                for name, v in items
            )
        )

    def __iter__(self) -> Iterator[LayoutEntry]:
        return iter(self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in layout order."""
        return tuple(self._index)

    def entry(self, name: str) -> LayoutEntry:
        """Return the layout entry of ``name``."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"parameter {name!r} is not in the layout") from None

    def offset(self, name: str) -> int:
        """Return the base global offset of parameter ``name``."""
        return self.entry(name).offset

    def perturbation(
        self, seed: int, name: str, kind: str = "irwin_hall", *, chunk: int = DEFAULT_CHUNK
    ) -> torch.Tensor:
        """Return z for parameter ``name``, shaped like the parameter."""
        e = self.entry(name)
        return perturbation(seed, e.offset, e.numel, kind, chunk=chunk).view(e.shape)
