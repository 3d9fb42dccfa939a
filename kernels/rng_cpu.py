"""Fast CPU fill of the seeded perturbation (contract: core/rng.py) by a cached C++ kernel."""

from __future__ import annotations

import ctypes
import functools
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
from importlib import resources
from pathlib import Path

import torch
from torch.autograd.graph import increment_version

from fedft.core.cache import cache_dir
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

# The C++ source ships next to this module; its @NAME@ placeholders take core.rng's constants,
# so that the two implementations cannot drift apart.
_SOURCE_FILE = "rng_cpu.cpp"


@functools.cache
def _source() -> str:
    """Return the kernel's C++ source with the contract's constants filled in (read once)."""
    text = resources.files(__package__ or "fedft.kernels").joinpath(_SOURCE_FILE).read_text("utf-8")
    for name, value in (
        ("M0", str(PHILOX_M0)),
        ("M1", str(PHILOX_M1)),
        ("W0", str(PHILOX_W0)),
        ("W1", str(PHILOX_W1)),
        ("SCALE", IRWIN_HALL_SCALE.hex()),
        ("SHIFT", str(IRWIN_HALL_SHIFT)),
    ):
        text = text.replace(f"@{name}@", value)
    return text


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
    return cache_dir() / "kernels"


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
        [_source(), *_FLAGS, *cmd, str(stat.st_size), str(stat.st_mtime_ns), platform.machine()]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _cache_dir() / f"rng_cpu-{sys.platform}-{digest}.so"


def _build(cmd: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a private folder and rename into place: concurrent processes never see a half
    # written library, and the last rename wins with identical bytes.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src, lib = Path(tmp) / "rng_cpu.cpp", Path(tmp) / "rng_cpu.so"
        src.write_text(_source(), encoding="utf-8")
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
