"""Cost of one zeroth-order (FedKSeed) step against two plain forward passes, side by side.

On the same model and batch, in one process: the time of two inference forwards, the time of
one ZO step as the fedkseed client runs it (perturb +eps, forward, perturb -2eps, forward,
restore-and-update; z regenerated or cached), peak memory of each (CUDA: max allocated; CPU:
peak RSS growth), and the throughput of the CPU perturbation path. Prints ratios; asserts
nothing. Issue 4's goals: ZO step <= 1.15x two forwards on GPU, memory <= 1.10x inference,
and >= 100 M perturbation values/s on 2 CPU cores.

Examples::

    python benchmarks/zo_step.py --model tiny
    python benchmarks/zo_step.py --model smollm2 --trainable self_attn --batch-size 1
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch

from fedft.kernels.rng_cpu import backend_name, fill_perturbation
from fedft.kernels.seed_ops import direction, perturb_
from fedft.runtime.batching import collate, encode
from fedft.runtime.data import load_chatterbot
from fedft.runtime.models import load_model
from fedft.strategies.seedpool.trainable import flat_trainable


def best_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Best wall time of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_rng_rate(kind: str, repeats: int) -> None:
    """Print the CPU perturbation path's values/s next to torch.randn's."""
    out = torch.empty(1 << 22, dtype=torch.float32)
    rate = out.numel() / best_seconds(
        lambda: fill_perturbation(1, 0, out, kind), repeats, lambda: None
    )
    randn = out.numel() / best_seconds(
        lambda: torch.randn(out.numel(), out=out), repeats, lambda: None
    )
    print(
        f"CPU perturbation ({backend_name()}, {kind}): {rate / 1e6:.1f} M values/s "
        f"({rate / randn:.2f}x torch.randn at {randn / 1e6:.1f} M/s)"
    )


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="model spec (tiny, smollm2, or a path)")
    parser.add_argument("--trainable", default="all", help="parameters the ZO step perturbs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kind", default="irwin_hall", choices=["irwin_hall", "rademacher"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    return parser.parse_args()


def main() -> None:
    """Measure and print."""
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    bundle = load_model(args.model)
    model = bundle.model.to(device).eval()
    examples = load_chatterbot()[: args.batch_size]
    items = [encode(bundle.tokenizer, ex, args.max_length) for ex in examples]
    batch = {k: v.to(device) for k, v in collate(items, bundle.tokenizer.pad_token_id).items()}
    params = flat_trainable(model, args.trainable)

    def forward() -> float:
        with torch.inference_mode():
            return float(model(**batch).logits[0, 0, 0])

    def zo_step(cache: bool) -> None:
        z = direction(params, 7, args.kind) if cache else None
        perturb_(params, 7, 1e-3, args.kind, cached=z)
        forward()
        perturb_(params, 7, -2e-3, args.kind, cached=z)
        forward()
        perturb_(params, 7, 1e-3 - 1e-6, args.kind, cached=z)

    rss0 = peak_rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    two = best_seconds(lambda: (forward(), forward()), args.repeats, sync)
    mem_inference = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    rss_inference = peak_rss_mb()
    regen = best_seconds(lambda: zo_step(False), args.repeats, sync)
    mem_zo = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    rss_regen = peak_rss_mb()
    # FedKSeed keeps z only on the CPU (strategies.fedkseed.client.caches_z): on a GPU the
    # kernel regenerates it inside the update, faster than a cache is read.
    cached = best_seconds(lambda: zo_step(True), args.repeats, sync) if device == "cpu" else None
    rss_cached = peak_rss_mb()

    print(
        f"model={args.model} device={device} threads={torch.get_num_threads()} "
        f"trainable={args.trainable} ({params.total / 1e6:.2f} M values) batch={args.batch_size}"
    )
    print(f"two forwards              {two * 1e3:9.1f} ms   1.00x")
    print(f"ZO step, z regenerated    {regen * 1e3:9.1f} ms   {regen / two:.2f}x two forwards")
    if cached is not None:
        print(
            f"ZO step, z cached         {cached * 1e3:9.1f} ms   {cached / two:.2f}x two forwards"
        )
    else:
        print("ZO step, z cached         not run: fedft caches z on the CPU only")
    if device == "cuda":
        print(
            f"peak memory: inference {mem_inference / 2**20:.1f} MiB, ZO {mem_zo / 2**20:.1f} MiB"
        )
        print(f"  ratio {mem_zo / max(mem_inference, 1):.3f}x")
    else:
        print(
            f"peak RSS (MiB): start {rss0:.0f}, after inference {rss_inference:.0f}, "
            f"after ZO regenerated {rss_regen:.0f} "
            f"({rss_regen / rss_inference:.3f}x), after ZO cached {rss_cached:.0f}"
        )

    print_rng_rate(args.kind, args.repeats)


if __name__ == "__main__":
    main()
