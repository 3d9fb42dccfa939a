"""Throughput of the seeded perturbation generator on CPU, with torch.randn as the yardstick.

Times the pure-torch reference (core.rng.perturbation) and the fast path
(kernels.rng_cpu.fill_perturbation, backend chosen by FEDFT_KERNELS) in one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from fedft.core.rng import DEFAULT_CHUNK, KINDS, perturbation
from fedft.kernels.rng_cpu import backend_name, fill_perturbation


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-touch page faults and lazy init do not belong in the timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=1 << 22, help="values per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best is kept")
    parser.add_argument(
        "--chunk", type=int, nargs="+", default=[DEFAULT_CHUNK], help="chunk sizes to try"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    out = torch.empty(args.numel, dtype=torch.float32)
    ref = best_seconds(lambda: torch.randn(args.numel, out=out), args.repeats)
    ref_rate = args.numel / ref
    print(f"numel={args.numel} repeats={args.repeats} threads={torch.get_num_threads()}")
    print(f"{'torch.randn':>24s}  {ref_rate / 1e6:9.1f} M values/s  (reference)")
    # The first use loads the cached kernel, or compiles it when the cache is cold.
    start = time.perf_counter()
    fast = backend_name()
    print(f"fill_perturbation backend: {fast} (first use: {time.perf_counter() - start:.3f} s)")
    for kind in KINDS:
        best_ref = 0.0
        for chunk in args.chunk:

            def run(kind: str = kind, chunk: int = chunk) -> object:
                return perturbation(12345, 1 << 31, args.numel, kind, chunk=chunk, out=out)

            rate = args.numel / best_seconds(run, args.repeats)
            best_ref = max(best_ref, rate)
            label = f"{kind} chunk={chunk}"
            print(f"{label:>24s}  {rate / 1e6:9.1f} M values/s  ({rate / ref_rate:.3f}x randn)")

        def run_fast(kind: str = kind) -> object:
            return fill_perturbation(12345, 1 << 31, out, kind)

        rate = args.numel / best_seconds(run_fast, args.repeats)
        label = f"{kind} {fast}"
        print(
            f"{label:>24s}  {rate / 1e6:9.1f} M values/s  ({rate / ref_rate:.3f}x randn, "
            f"{rate / best_ref:.2f}x reference)"
        )


if __name__ == "__main__":
    main()
