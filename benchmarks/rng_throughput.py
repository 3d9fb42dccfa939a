"""Throughput of the seeded perturbation generator on CPU, with torch.randn as the yardstick."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from fedft.core.rng import DEFAULT_CHUNK, KINDS, perturbation


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
    for kind in KINDS:
        for chunk in args.chunk:

            def run(kind: str = kind, chunk: int = chunk) -> object:
                return perturbation(12345, 1 << 31, args.numel, kind, chunk=chunk, out=out)

            rate = args.numel / best_seconds(run, args.repeats)
            label = f"{kind} chunk={chunk}"
            print(f"{label:>24s}  {rate / 1e6:9.1f} M values/s  ({rate / ref_rate:.3f}x randn)")


if __name__ == "__main__":
    main()
