"""Virtual clients per second: N LoRA clients trained one at a time vs together (--batch-clients).

For each model and each N, N clients (chatterbot shards, one shared model, rank-8 LoRA on every
linear projection, as fedavg_lora trains) each run one local round of ``--steps`` AdamW steps of
``--batch-size`` examples: first one after another with ``LocalTrainer.train`` (what the
in-process engine does without the flag), then all at once with ``train_together`` (what
``fedft simulate --batch-clients N`` does). Prints client-rounds/s of each and the speed-up,
measured side by side in one process; asserts nothing. Issue 23's goal: >= 10x at N = 32 on
SmolLM2 on a GPU.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/batched_clients.py --models tiny --clients 1,8,32,128
    python benchmarks/batched_clients.py --models tiny,smollm2 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fedft.core.trainer import LoraSpec
from fedft.runtime.assembly import place
from fedft.runtime.batched_training import TrainJob, train_together
from fedft.runtime.data import load_chatterbot
from fedft.runtime.models import load_model
from fedft.runtime.placement import resolve_device
from fedft.runtime.trainer import LocalTrainer

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SPEC = LoraSpec(rank=8, alpha=16, target_modules=ALL_LINEAR)


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``run()``, waiting for the device's queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(model: str, counts: list[int], args: argparse.Namespace) -> list[dict[str, object]]:
    """Sequential and batched seconds for every client count on one loaded model."""
    device = resolve_device(args.device)
    bundle = load_model(model)
    place(bundle, device)
    examples = load_chatterbot()
    most = max(counts)
    trainers = [
        LocalTrainer(bundle, examples[i::most][: args.examples], max_length=args.max_length)
        for i in range(most)
    ]
    trainers[0].add_lora(SPEC)
    start = trainers[0].lora_state()

    def sequential(n: int) -> None:
        for i, trainer in enumerate(trainers[:n]):
            trainer.load_lora_state(start)
            trainer.train(steps=args.steps, batch_size=args.batch_size, lr=1e-4, seed=i)

    def batched(n: int) -> None:
        jobs = [
            TrainJob(t, SPEC, start, steps=args.steps, batch_size=args.batch_size, lr=1e-4, seed=i)
            for i, t in enumerate(trainers[:n])
        ]
        train_together(jobs)

    sequential(1)  # warm-up: kernels, allocator, tokenization of the first batches
    batched(min(2, most))
    rows = []
    for n in counts:
        seq_s = timed(lambda n=n: sequential(n), device)
        bat_s = timed(lambda n=n: batched(n), device)
        rows.append(
            {
                "model": model,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "clients": n,
                "sequential_client_rounds_per_s": round(n / seq_s, 3),
                "batched_client_rounds_per_s": round(n / bat_s, 3),
                "speedup": round(seq_s / bat_s, 2),
            }
        )
        row = rows[-1]
        print(
            f"{model:>8} {row['device']:>10} N={n:<4} sequential "
            f"{row['sequential_client_rounds_per_s']:>8} client-rounds/s, batched "
            f"{row['batched_client_rounds_per_s']:>8} client-rounds/s, {row['speedup']}x",
            flush=True,
        )
    return rows


def main() -> None:
    """Measure every model and client count; print a line each (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny", help="comma-separated presets or folders")
    parser.add_argument("--clients", default="1,8,32,128", help="comma-separated client counts")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--steps", type=int, default=2, help="local steps per client round")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per local step")
    parser.add_argument("--examples", type=int, default=16, help="local examples per client")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    rows = [row for model in args.models.split(",") for row in measure(model, counts, args)]
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
