"""Each kernel against its torch baseline in one run, plus the copy and GEMM ceilings.

    python benchmarks/kernels.py                 # CUDA if present, else CPU
    python benchmarks/kernels.py --json out.json

For every op the dispatched kernel (Triton on CUDA; the CPU paths on CPU) and its baseline are
timed alternately for ``--rounds`` rounds (A, B, A, B, ...); each time is a median (CUDA:
``triton.testing.do_bench``, which flushes L2 between repetitions). The ratio is
median(baseline) / median(kernel), with the min and max over rounds. Achieved bandwidth and
FLOP/s are given as fractions of a device copy and a bf16 (CPU: fp32) GEMM measured in the
same run. Goals (H100): dequantize and perturb >= 80% of copy bandwidth; NF4 training matmul
<= 1.15x the bf16 ``F.linear`` time. Replay draws k values per weight it reads once, so it is
bound by generation, not bytes: its rate (normal values/s) is given as a fraction of an RNG
ceiling measured in the same run (CUDA: Triton's Philox ``tl.randn`` summed in registers; CPU:
``torch.randn`` into a cached buffer). On CPU the goals are not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fedft.kernels import projection, seeded
from fedft.kernels.quant import dequantize_parts, quantize
from fedft.kernels.quant_linear import QuantLinear

Fn = Callable[[], object]


@dataclass
class Row:
    """One op: kernel and baseline medians (s), their ratio, and achieved throughput."""

    op: str
    kernel_s: float
    baseline_s: float
    ratio: float
    ratio_min: float
    ratio_max: float
    bytes: int
    flops: int
    bandwidth_fraction: float | None
    flops_fraction: float | None
    goal: str
    values_per_s: float | None = None  # normal values generated per second (seeded ops)
    rng_fraction: float | None = None  # of the RNG ceiling: generation bounds replay, not bytes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_median(fn: Fn, device: torch.device, reps: int) -> float:
    """Median seconds of one call of ``fn``."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median")) / 1e3
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(
    kernel: Fn, baseline: Fn, device: torch.device, rounds: int, reps: int
) -> tuple[float, float, list[float]]:
    """Time kernel and baseline alternately; return their medians and the per-round ratios."""
    ks, bs = [], []
    for _ in range(rounds):
        ks.append(time_median(kernel, device, reps))
        bs.append(time_median(baseline, device, reps))
    return (
        statistics.median(ks),
        statistics.median(bs),
        [b / k for k, b in zip(ks, bs, strict=True)],
    )


def ceilings(device: torch.device, args: argparse.Namespace) -> tuple[float, float]:
    """Return (copy bytes/s counting read + write, GEMM FLOP/s) measured now."""
    n = args.copy_mib * 2**20 // 4
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    copy_s = time_median(lambda: dst.copy_(src), device, args.reps)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = args.gemm_ceiling
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    gemm_s = time_median(lambda: a @ b, device, args.reps)
    return 2 * src.numel() * 4 / copy_s, 2 * size**3 / gemm_s


def _rng_sum_kernel() -> Any:
    """A Triton kernel that draws normals with Triton's own Philox into registers and sums them.

    Nothing but one float per program touches memory, so its rate is what the device can
    generate: the yardstick for replay, whose k seeds are k draws per weight read once.
    """
    import triton
    import triton.language as tl

    @triton.jit  # type: ignore[untyped-decorator]
    def rng_sum(out_ptr, seed, ITERS: tl.constexpr, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        pid = tl.program_id(0)
        offsets = pid * BLOCK * ITERS + tl.arange(0, BLOCK)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for i in range(ITERS):
            acc += tl.randn(seed, offsets + i * BLOCK)
        tl.store(out_ptr + pid, tl.sum(acc, axis=0))

    return rng_sum


def rng_ceiling(device: torch.device, args: argparse.Namespace) -> float:
    """Normal values/s the device generates with no memory traffic to speak of.

    CUDA: Triton's Philox ``tl.randn`` summed in registers. CPU: ``torch.randn`` into a buffer
    that stays in cache.
    """
    if device.type == "cuda":
        kernel = _rng_sum_kernel()
        programs, iters, block = args.rng_programs, 64, 1024
        out = torch.empty(programs, device=device)
        seconds = time_median(
            lambda: kernel[(programs,)](out, 1, ITERS=iters, BLOCK=block), device, args.reps
        )
        return float(programs * iters * block / seconds)
    buffer = torch.empty(1 << 16)
    gen = torch.Generator().manual_seed(1)
    seconds = time_median(lambda: torch.randn(buffer.shape, generator=gen, out=buffer), device, 20)
    return buffer.numel() / seconds


def _row(
    *,
    op: str,
    kernel: Fn,
    baseline: Fn,
    nbytes: int,
    flops: int,
    goal: str,
    ctx: tuple[torch.device, argparse.Namespace, float, float],
) -> Row:
    device, args, copy_bw, gemm_fl = ctx
    k, b, ratios = interleaved(kernel, baseline, device, args.rounds, args.reps)
    return Row(
        op=op,
        kernel_s=k,
        baseline_s=b,
        ratio=b / k,
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        bytes=nbytes,
        flops=flops,
        bandwidth_fraction=nbytes / k / copy_bw if nbytes else None,
        flops_fraction=flops / k / gemm_fl if flops else None,
        goal=goal,
    )


def seeded_rows(ctx: tuple[torch.device, argparse.Namespace, float, float]) -> list[Row]:
    """Perturb, replay and projection against the torch RNG loops FedKSeed/Ferret use."""
    _, args, _, _ = ctx
    n, k = args.elements, args.seeds
    rows = _seeded_timings(ctx)
    for row, values in zip(rows, (n, n * k), strict=False):  # perturb, replay
        row.values_per_s = values / row.kernel_s
        row.rng_fraction = row.values_per_s / args.rng_rate
    return rows


def _seeded_timings(ctx: tuple[torch.device, argparse.Namespace, float, float]) -> list[Row]:
    """The perturb, replay and projection rows, timed."""
    device, args, _, _ = ctx
    n, k = args.elements, args.seeds
    w = torch.randn(n, device=device)
    seeds = list(range(1, k + 1))
    coeffs = [1e-3 * (i % 7 - 3) for i in range(k)]
    gen = torch.Generator(device=device)

    def perturb_baseline() -> None:
        gen.manual_seed(1)
        w.add_(torch.randn(n, device=device, generator=gen), alpha=1e-3)

    def replay_baseline() -> None:
        for seed, c in zip(seeds, coeffs, strict=True):
            gen.manual_seed(seed)
            w.add_(torch.randn(n, device=device, generator=gen), alpha=c)

    delta = torch.randn(n, device=device)
    project_seeds = seeds[: args.project_seeds]

    def project_baseline() -> None:
        for seed in project_seeds:
            gen.manual_seed(seed)
            torch.dot(torch.randn(n, device=device, generator=gen), delta).item()

    return [
        _row(
            op="perturb (W += eps*z)",
            kernel=lambda: seeded.perturb_(w, 1, 0, 1e-3),
            baseline=perturb_baseline,
            nbytes=8 * n,
            flops=0,
            goal=">= 0.80 of copy bandwidth",
            ctx=ctx,
        ),
        _row(
            op=f"replay {k} seeds",
            kernel=lambda: seeded.replay_(w, 0, seeds, coeffs),
            baseline=replay_baseline,
            nbytes=8 * n,
            flops=0,
            goal="near the RNG ceiling (compute-bound: k draws per weight)",
            ctx=ctx,
        ),
        _row(
            op=f"project {len(project_seeds)} bases",
            kernel=lambda: projection.project(delta, 0, project_seeds),
            baseline=project_baseline,
            nbytes=4 * n,
            flops=0,
            goal="",
            ctx=ctx,
        ),
    ]


def quant_rows(ctx: tuple[torch.device, argparse.Namespace, float, float]) -> list[Row]:
    """NF4 dequantize against the torch lookup, and the NF4 training matmul against F.linear."""
    device, args, _, _ = ctx
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    m, kdim, ndim = args.gemm
    weight = torch.randn(ndim, kdim, device=device, dtype=dtype) * 0.02
    q = quantize(weight, "nf4")
    from fedft.kernels.reference import quant as reference_quant

    def dequant_kernel() -> torch.Tensor:
        return dequantize_parts(
            "nf4", q.codes, q.scales, q.shape, blocksize=q.blocksize, dtype=dtype
        )

    def dequant_baseline() -> object:
        return reference_quant.dequantize(
            "nf4", q.codes, q.scales, q.numel, blocksize=q.blocksize, dtype=dtype
        )

    numel = weight.numel()
    dq_bytes = numel // 2 + q.scales.numel() * 4 + numel * weight.element_size()
    linear = torch.nn.Linear(kdim, ndim, bias=False, device=device, dtype=dtype)
    linear.weight.requires_grad_(False)
    layer = QuantLinear.from_linear(linear, "nf4")
    x = torch.randn(m, kdim, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(m, ndim, device=device, dtype=dtype)

    def train_step(fn: Callable[[torch.Tensor], torch.Tensor]) -> Fn:
        def step() -> None:
            x.grad = None
            fn(x).backward(grad)

        return step

    gemm_flops = 2 * 2 * m * kdim * ndim  # forward and input gradient
    rows = []
    if device.type == "cuda":
        from fedft.kernels.triton.quant_matmul import fused_matmul

        small = torch.randn(args.small_m, kdim, device=device, dtype=dtype)
        rows.append(
            _row(
                op=f"NF4 fwd M={args.small_m}: fused vs split",
                kernel=lambda: fused_matmul(
                    small, "nf4", q.codes, q.scales, ndim, blocksize=q.blocksize
                ),
                baseline=lambda: F.linear(small, dequant_kernel()),
                nbytes=dq_bytes - numel * weight.element_size(),
                flops=2 * args.small_m * kdim * ndim,
                goal="ratio > 1 means the fused path wins at this M",
                ctx=ctx,
            )
        )
    return [
        *rows,
        _row(
            op="NF4 dequantize",
            kernel=dequant_kernel,
            baseline=dequant_baseline,
            nbytes=dq_bytes,
            flops=0,
            goal=">= 0.80 of copy bandwidth",
            ctx=ctx,
        ),
        _row(
            op=f"NF4 train matmul {m}x{kdim}x{ndim} (fwd + dX)",
            kernel=train_step(layer),
            baseline=train_step(lambda t: F.linear(t, linear.weight)),
            nbytes=0,
            flops=gemm_flops,
            goal="kernel time <= 1.15x baseline (ratio >= 0.87)",
            ctx=ctx,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--reps", type=int, default=5, help="CPU repetitions per median")
    parser.add_argument("--elements", type=int, default=None, help="weights for the seeded ops")
    parser.add_argument("--seeds", type=int, default=64, help="seeds in the replay (default: 64)")
    parser.add_argument("--project-seeds", type=int, default=8, help="bases in the projection")
    parser.add_argument("--gemm", type=int, nargs=3, default=None, metavar=("M", "K", "N"))
    parser.add_argument("--small-m", type=int, default=16, help="tokens for the fused row")
    parser.add_argument("--gemm-ceiling", type=int, default=None, help="square GEMM ceiling size")
    parser.add_argument("--copy-mib", type=int, default=None, help="copy ceiling buffer (MiB)")
    parser.add_argument(
        "--rng-programs", type=int, default=8192, help="programs of the CUDA RNG ceiling kernel"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    args.elements = args.elements or (2**28 if gpu else 2**20)
    args.gemm = args.gemm or ([4096, 4096, 4096] if gpu else [256, 512, 512])
    args.gemm_ceiling = args.gemm_ceiling or (8192 if gpu else 512)
    args.copy_mib = args.copy_mib or (1024 if gpu else 64)
    if not gpu:
        args.seeds = min(args.seeds, 8)
    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    copy_bw, gemm_fl = ceilings(device, args)
    args.rng_rate = rng_ceiling(device, args)
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"ceilings: copy {copy_bw / 1e9:.1f} GB/s (read + write), "
        f"GEMM {gemm_fl / 1e12:.2f} TFLOP/s, RNG {args.rng_rate / 1e9:.1f} G normal values/s"
    )
    ctx = (device, args, copy_bw, gemm_fl)
    rows = seeded_rows(ctx) + quant_rows(ctx)
    print(
        f"{'op':44} {'kernel ms':>10} {'torch ms':>10} {'ratio':>6} {'(min-max)':>12} "
        f"{'BW':>6} {'FLOP':>6} {'RNG':>6}  goal"
    )
    for r in rows:
        bw = f"{r.bandwidth_fraction:.2f}" if r.bandwidth_fraction is not None else "-"
        fl = f"{r.flops_fraction:.2f}" if r.flops_fraction is not None else "-"
        rng = f"{r.rng_fraction:.2f}" if r.rng_fraction is not None else "-"
        span = f"{r.ratio_min:.2f}-{r.ratio_max:.2f}"
        print(
            f"{r.op:44} {r.kernel_s * 1e3:10.3f} {r.baseline_s * 1e3:10.3f} {r.ratio:6.2f} "
            f"{span:>12} {bw:>6} {fl:>6} {rng:>6}  {r.goal if gpu else ''}"
        )
    if not gpu:
        print(
            "CPU run: the kernels column is the CPU path (compiled Philox, torch dequantize); "
            "the H100 goals are NOT measured here. Run on a CUDA device for the Triton numbers."
        )
    if args.json:
        payload = {
            "device": name,
            "copy_Bps": copy_bw,
            "gemm_flops": gemm_fl,
            "rng_values_per_s": args.rng_rate,
        }
        payload["rows"] = [asdict(r) for r in rows]
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
