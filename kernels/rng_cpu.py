"""Fast CPU fill of the seeded perturbation (contract: core/rng.py) by a cached C++ kernel."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import operator
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.autograd.graph import increment_version

from fedft.core.rng import (
    IRWIN_HALL_SCALE,
    IRWIN_HALL_SHIFT,
    KINDS,
    PHILOX_M0,
    PHILOX_M1,
    PHILOX_W0,
    PHILOX_W1,
    perturbation,
    validate_seed,
)
from fedft.kernels.dispatch import KernelUnavailableError, rng_requested

_LOG = logging.getLogger(__name__)
_COUNTER_LIMIT = 1 << 64
_KIND_CODES = {"irwin_hall": 0, "rademacher": 1}
_ISA_NAMES = {0: "portable", 1: "avx2"}
# Compiling takes a few seconds; the bound only stops a wedged compiler from hanging a client.
_COMPILE_TIMEOUT_S = 300
# No -march=native: the cached library must stay valid if the cache folder moves to another CPU,
# so the AVX2 path is chosen at run time instead. -ffp-contract=off keeps the compiler from fusing
# float operations, whose rounding would differ from the reference (today there is one multiply).
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off")

# The constants come from core.rng so that the two implementations cannot drift apart.
_SOURCE = (
    """
// Philox4x32-10 perturbations, bit-identical to fedft.core.rng.perturbation (see its docstring).
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEDFT_X86 1
#endif

namespace {
constexpr uint32_t M0 = @M0@u, M1 = @M1@u, W0 = @W0@u, W1 = @W1@u;
constexpr float SCALE = @SCALE@f;  // exactly representable: float32 of the reference's scale
constexpr int32_t SHIFT = @SHIFT@;
constexpr int BLOCK = 32;  // offsets per block: four AVX2 vectors in flight hide multiply latency
constexpr int64_t MIN_PER_THREAD = 1 << 16;  // below this a thread costs more than it saves

using Fill = void (*)(uint64_t, uint64_t, float*, int64_t);

// z of one element from its four words; shared by both paths so the mapping exists only once.
template <int KIND>
inline float emit(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
  if (KIND == 1) return (w0 & 1u) ? -1.0f : 1.0f;
  const int32_t s = (int32_t)((w0 & 0xFFFFu) + (w0 >> 16) + (w1 & 0xFFFFu) + (w1 >> 16) +
                              (w2 & 0xFFFFu) + (w2 >> 16) + (w3 & 0xFFFFu) + (w3 >> 16));
  return (float)(2 * s - SHIFT) * SCALE;  // |v| < 2**24: the conversion is exact
}

// Plain C++ written so that the compiler auto-vectorises the lane loops on any architecture.
template <int KIND>
void fill_portable(uint64_t seed, uint64_t first, float* __restrict out, int64_t n) {
  const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  uint32_t c0[BLOCK], c1[BLOCK], c2[BLOCK], c3[BLOCK];
  float z[BLOCK];
  for (int64_t base = 0; base < n; base += BLOCK) {
    const uint64_t start = first + (uint64_t)base;
    // Per-lane 64-bit counters: a block may straddle a 2**32 boundary, where the high word steps.
    for (int j = 0; j < BLOCK; ++j) {
      const uint64_t ctr = start + (uint64_t)j;
      c0[j] = (uint32_t)ctr;
      c1[j] = (uint32_t)(ctr >> 32);
      c2[j] = 0;
      c3[j] = 0;
    }
    uint32_t a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      for (int j = 0; j < BLOCK; ++j) {
        const uint64_t p0 = (uint64_t)M0 * c0[j], p1 = (uint64_t)M1 * c2[j];
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ a;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ b;
        c1[j] = (uint32_t)p1;
        c3[j] = (uint32_t)p0;
        c0[j] = n0;
        c2[j] = n2;
      }
      a += W0;
      b += W1;
    }
    for (int j = 0; j < BLOCK; ++j) z[j] = emit<KIND>(c0[j], c1[j], c2[j], c3[j]);
    const int m = (n - base < BLOCK) ? (int)(n - base) : BLOCK;
    for (int j = 0; j < m; ++j) out[base + j] = z[j];
  }
}

#ifdef FEDFT_X86
// 32x32->64 multiply of eight lanes: mul_epu32 only reads the even lanes, so the odd lanes are
// shifted down and multiplied separately, then the halves are blended back into lane order.
__attribute__((target("avx2"))) inline void mulhilo(__m256i x, __m256i m, __m256i& hi,
                                                     __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

template <int KIND>
__attribute__((target("avx2"))) void fill_avx2(uint64_t seed, uint64_t first,
                                               float* __restrict out, int64_t n) {
  constexpr int V = BLOCK / 8;
  const __m256i m0 = _mm256_set1_epi32((int)M0), m1 = _mm256_set1_epi32((int)M1);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  alignas(32) uint32_t lo[BLOCK], hi[BLOCK];
  alignas(32) float z[BLOCK];
  for (int64_t base = 0; base < n; base += BLOCK) {
    const uint64_t start = first + (uint64_t)base;
    const uint32_t start_lo = (uint32_t)start;
    __m256i c0[V], c1[V], c2[V], c3[V];
    if (start_lo <= 0xFFFFFFFFu - (BLOCK - 1)) {
      // Common case: the high word is the same for the whole block.
      for (int v = 0; v < V; ++v) {
        c0[v] = _mm256_add_epi32(_mm256_set1_epi32((int)(start_lo + 8u * v)), iota);
        c1[v] = _mm256_set1_epi32((int)(uint32_t)(start >> 32));
      }
    } else {
      // The block straddles a 2**32 boundary: build the counters lane by lane.
      for (int j = 0; j < BLOCK; ++j) {
        const uint64_t ctr = start + (uint64_t)j;
        lo[j] = (uint32_t)ctr;
        hi[j] = (uint32_t)(ctr >> 32);
      }
      for (int v = 0; v < V; ++v) {
        c0[v] = _mm256_load_si256((const __m256i*)(lo + 8 * v));
        c1[v] = _mm256_load_si256((const __m256i*)(hi + 8 * v));
      }
    }
    for (int v = 0; v < V; ++v) c2[v] = c3[v] = _mm256_setzero_si256();
    uint32_t a = (uint32_t)seed, b = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      const __m256i ka = _mm256_set1_epi32((int)a), kb = _mm256_set1_epi32((int)b);
      for (int v = 0; v < V; ++v) {
        __m256i h0, l0, h1, l1;
        mulhilo(c2[v], m1, h1, l1);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(h1, c1[v]), ka);
        // Rademacher reads only w0, which the last round gets from the M1 product alone.
        if (KIND == 1 && r == 9) {
          c0[v] = n0;
          continue;
        }
        mulhilo(c0[v], m0, h0, l0);
        c2[v] = _mm256_xor_si256(_mm256_xor_si256(h0, c3[v]), kb);
        c0[v] = n0;
        c1[v] = l1;
        c3[v] = l0;
      }
      a += W0;
      b += W1;
    }
    for (int v = 0; v < V; ++v) {
      __m256 r;
      if (KIND == 1) {
        // Bit 0 of w0 becomes the sign bit of 1.0f: +1.0 for 0, -1.0 for 1.
        const __m256i sign = _mm256_slli_epi32(c0[v], 31);
        r = _mm256_castsi256_ps(_mm256_or_si256(sign, _mm256_set1_epi32(0x3F800000)));
      } else {
        __m256i s = _mm256_add_epi32(_mm256_and_si256(c0[v], low16), _mm256_srli_epi32(c0[v], 16));
        s = _mm256_add_epi32(s, _mm256_and_si256(c1[v], low16));
        s = _mm256_add_epi32(s, _mm256_srli_epi32(c1[v], 16));
        s = _mm256_add_epi32(s, _mm256_and_si256(c2[v], low16));
        s = _mm256_add_epi32(s, _mm256_srli_epi32(c2[v], 16));
        s = _mm256_add_epi32(s, _mm256_and_si256(c3[v], low16));
        s = _mm256_add_epi32(s, _mm256_srli_epi32(c3[v], 16));
        s = _mm256_sub_epi32(_mm256_add_epi32(s, s), _mm256_set1_epi32(SHIFT));
        r = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(SCALE));
      }
      if (n - base >= BLOCK) {
        _mm256_storeu_ps(out + base + 8 * v, r);
      } else {
        _mm256_store_ps(z + 8 * v, r);
      }
    }
    if (n - base < BLOCK) {
      for (int j = 0; j < (int)(n - base); ++j) out[base + j] = z[j];
    }
  }
}
#endif

bool has_avx2() {
#ifdef FEDFT_X86
  __builtin_cpu_init();  // idempotent; makes the check safe however early the library is loaded
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

Fill pick(int kind, bool portable) {
#ifdef FEDFT_X86
  if (!portable && has_avx2()) return kind == 1 ? fill_avx2<1> : fill_avx2<0>;
#endif
  return kind == 1 ? fill_portable<1> : fill_portable<0>;
}
}  // namespace

// 1 when the AVX2 path runs on this CPU, 0 for the portable path.
extern "C" int fedft_rng_isa() { return has_avx2() ? 1 : 0; }

// Fills out[0..n) for offsets offset..offset+n-1, splitting the range into contiguous slices.
extern "C" void fedft_rng_fill(uint64_t seed, uint64_t offset, float* out, int64_t n, int kind,
                               int threads, int portable) {
  const Fill fill = pick(kind, portable != 0);
  const int64_t most = n / MIN_PER_THREAD;
  const int64_t count = threads < 1 ? 1 : (threads < most ? threads : (most < 1 ? 1 : most));
  // Slices are whole blocks, so only the last one ends in a partial block.
  const int64_t per = ((n + count - 1) / count + BLOCK - 1) / BLOCK * BLOCK;
  std::vector<std::thread> pool;
  for (int64_t start = per; start < n; start += per) {
    const int64_t len = (n - start < per) ? n - start : per;
    try {
      pool.emplace_back(fill, seed, offset + (uint64_t)start, out + start, len);
    } catch (const std::system_error&) {
      fill(seed, offset + (uint64_t)start, out + start, len);  // no thread to be had: do it here
    }
  }
  fill(seed, offset, out, n < per ? n : per);
  for (std::thread& t : pool) t.join();
}
""".replace("@M0@", str(PHILOX_M0))
    .replace("@M1@", str(PHILOX_M1))
    .replace("@W0@", str(PHILOX_W0))
    .replace("@W1@", str(PHILOX_W1))
    .replace("@SCALE@", IRWIN_HALL_SCALE.hex())
    .replace("@SHIFT@", str(IRWIN_HALL_SHIFT))
)


class _BuildError(RuntimeError):
    """The compiler failed on the kernel's source (the message is one line)."""


@dataclass(frozen=True)
class _Kernel:
    fill: Callable[..., None]
    isa: str
    path: Path


_lock = threading.Lock()
# None until the first use, then the loaded kernel or the reason it is unavailable (cached, so a
# missing compiler is looked for once per process, not once per call).
_kernel: _Kernel | str | None = None


def _cache_dir() -> Path:
    # Same folder as the model cache (client.models.cache_dir); kernels may not import client.
    root = os.environ.get("FEDFT_CACHE") or Path.home() / ".cache" / "fedft"
    return Path(root).expanduser() / "kernels"


def _compiler() -> list[str] | None:
    """Return the C++ compiler command ($CXX, else c++, g++ or clang++), or None if none."""
    if os.environ.get("CXX"):
        cmd = shlex.split(os.environ["CXX"])
        found = shutil.which(cmd[0])
        return [found, *cmd[1:]] if found else None
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def _library_path(cmd: list[str]) -> Path:
    # The key covers everything that changes the binary; the compiler's size and mtime stand in
    # for its version, which would cost a subprocess in every process to ask.
    stat = os.stat(os.path.realpath(cmd[0]))
    key = "\0".join(
        [_SOURCE, *_FLAGS, *cmd, str(stat.st_size), str(stat.st_mtime_ns), platform.machine()]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _cache_dir() / f"rng_cpu-{sys.platform}-{digest}.so"


def _build(cmd: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private folder and rename into place: concurrent processes never see a half
    # written library, and the last rename wins with identical bytes.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src, lib = Path(tmp) / "rng_cpu.cpp", Path(tmp) / "rng_cpu.so"
        src.write_text(_SOURCE, encoding="utf-8")
        proc = subprocess.run(
            [*cmd, *_FLAGS, str(src), "-o", str(lib)],
            capture_output=True,
            text=True,
            timeout=_COMPILE_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            # The reason must fit one line (it may end up in a UsageError); the log has it all.
            _LOG.debug("compiler output:\n%s", proc.stderr)
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if "error" in line.lower()]
            detail = (errors[:1] or lines[-1:] or [""])[0]
            raise _BuildError(
                f"compiling the rng kernel with {cmd[0]} failed (exit {proc.returncode})"
                + (f": {detail}" if detail else "")
            )
        os.replace(lib, target)
    _prune_stale(target)


def _prune_stale(keep: Path) -> None:
    """Delete the libraries older sources or compilers built; a new build supersedes them."""
    for stale in keep.parent.glob(f"rng_cpu-{sys.platform}-*.so"):
        if stale != keep:
            # Unlinking is safe even while another process has the old library loaded.
            stale.unlink(missing_ok=True)


def _load_kernel() -> _Kernel | str:
    """Return the compiled kernel, compiling it into the cache on first use, or why it cannot."""
    if sys.platform == "win32":
        return "the compiled rng backend needs a GCC or Clang toolchain (not supported on Windows)"
    cmd = _compiler()
    if cmd is None:
        return "no C++ compiler found (install g++ or clang++, or set CXX)"
    try:
        path = _library_path(cmd)
        if not path.is_file():
            _build(cmd, path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError, _BuildError) as exc:
        return f"the compiled rng backend is unavailable: {exc}"
    fill = lib.fedft_rng_fill
    # ctypes releases the GIL for the duration of the call, so other Python threads keep running.
    fill.argtypes = [
        ctypes.c_uint64,
        ctypes.c_uint64,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
    ]
    fill.restype = None
    isa = _ISA_NAMES[int(lib.fedft_rng_isa())]
    return _Kernel(fill, isa, path)


def _kernel_or_reason() -> _Kernel | str:
    global _kernel  # noqa: PLW0603 - one lazily built kernel per process
    with _lock:
        if _kernel is None:
            _kernel = _load_kernel()
            if isinstance(_kernel, str):
                _LOG.debug("falling back to the torch rng backend: %s", _kernel)
        return _kernel


def _selected() -> _Kernel | None:
    """Return the kernel to use, or None for the torch reference; honours ``FEDFT_KERNELS``."""
    requested, variable = rng_requested()
    if requested == "torch":
        return None
    kernel = _kernel_or_reason()
    if isinstance(kernel, str):
        if requested == "compiled":
            raise KernelUnavailableError(f"{variable}=compiled, but {kernel}")
        return None
    return kernel


def backend_name() -> str:
    """Return the backend in use: "torch", "compiled-avx2" or "compiled-portable"."""
    kernel = _selected()
    return "torch" if kernel is None else f"compiled-{kernel.isa}"


def _validate(seed: int, offset: int, out: torch.Tensor, kind: str) -> tuple[int, int]:
    # Same checks, order and messages as core.rng.perturbation, so callers can swap the two.
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous():
        raise ValueError("out must be a contiguous float32 CPU tensor")
    seed = validate_seed(seed)
    offset, numel = operator.index(offset), out.numel()
    if offset < 0:
        raise ValueError(f"offset and numel must be >= 0, got offset={offset} numel={numel}")
    if offset + numel > _COUNTER_LIMIT:
        raise ValueError("offset + numel must not exceed 2**64 (the Philox counter width)")
    return seed, offset


def _fill_compiled(
    kernel: _Kernel, seed: int, offset: int, out: torch.Tensor, kind: str, *, portable: bool
) -> None:
    if out.numel():
        threads = torch.get_num_threads()
        code = _KIND_CODES[kind]
        kernel.fill(seed, offset, out.data_ptr(), out.numel(), code, threads, int(portable))
    # The write bypasses torch, so bump the version counter as in-place torch ops do: autograd
    # then notices if a tensor saved for backward was overwritten.
    increment_version(out)


def fill_perturbation(
    seed: int, offset: int, out: torch.Tensor, kind: str = "irwin_hall"
) -> torch.Tensor:
    """Fill ``out`` (flat order) with z for offsets ``offset..offset+out.numel()-1``; return it."""
    seed, offset = _validate(seed, offset, out, kind)
    kernel = _selected()
    # A tensor that records autograd history gets the reference's in-place ops and their errors.
    if kernel is None or (out.requires_grad and torch.is_grad_enabled()):
        return perturbation(seed, offset, out.numel(), kind, out=out)
    _fill_compiled(kernel, seed, offset, out, kind, portable=False)
    return out
