"""In-kernel Philox4x32-10 and the contract's z mapping (core/rng.py), for Triton kernels.

The counter is the 64-bit global offset split into two uint32 words, built here from a base
offset (``base_lo``, ``base_hi``) plus a uint32 element index with an explicit carry, so offsets
past 2**32 work. ``tl.philox`` with uint32 counter words is the standard Philox4x32-10 in every
Triton release we support (3.6 onwards); ``tl.randint4x`` is not used because newer releases
switch it to Philox4x64 for 64-bit offsets.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fedft.core.rng import IRWIN_HALL_SCALE, IRWIN_HALL_SHIFT

KIND_IRWIN_HALL = 0
KIND_RADEMACHER = 1
KIND_CODES = {"irwin_hall": KIND_IRWIN_HALL, "rademacher": KIND_RADEMACHER}
SCALE = tl.constexpr(IRWIN_HALL_SCALE)
SHIFT = tl.constexpr(IRWIN_HALL_SHIFT)


@triton.jit
def counters(base_lo, base_hi, idx):
    """Return the (lo, hi) uint32 counter words of global offsets ``base + idx``."""
    b_lo = base_lo.to(tl.uint32)
    b_hi = base_hi.to(tl.uint32)
    lo = idx.to(tl.uint32) + b_lo
    # The low word wrapped exactly when it ended below the base: carry one into the high word.
    hi = b_hi + (lo < b_lo).to(tl.uint32)
    return lo, hi


@triton.jit
def _halves(w):
    return (w & 0xFFFF) + (w >> 16)


@triton.jit
def z_from_words(w0, w1, w2, w3, KIND: tl.constexpr):
    """Map four Philox words to the contract's fp32 z (Rademacher or Irwin–Hall)."""
    if KIND == 1:
        return 1.0 - 2.0 * (w0 & 1).to(tl.float32)
    s = _halves(w0) + _halves(w1) + _halves(w2) + _halves(w3)
    # |2s - shift| < 2**24, so the int -> fp32 conversion is exact; one fp32 multiply follows.
    v = (2 * s).to(tl.int32) - SHIFT
    return v.to(tl.float32) * SCALE


@triton.jit
def z_at(seed, base_lo, base_hi, idx, KIND: tl.constexpr):
    """Return z(seed) at global offsets ``base + idx`` as fp32 (``seed`` is any int scalar)."""
    lo, hi = counters(base_lo, base_hi, idx)
    zero = lo * 0
    w0, w1, w2, w3 = tl.philox(seed, lo, hi, zero, zero)
    return z_from_words(w0, w1, w2, w3, KIND)
