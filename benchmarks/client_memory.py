"""Peak RSS of one client: LoRA rounds with --quant none|int8|nf4, FedKSeed and inference.

Each case runs in its own child process (a fresh interpreter, so one case's peak cannot hide
another's) built by the assembly point as every host builds it, on the CPU. A LoRA case runs
``--rounds`` rounds of ``fedavg_lora`` (configure on the server half, ``run`` on the client half,
aggregate) with ``--batch-size`` examples of ``--tokens`` tokens; FedKSeed runs as many rounds
of its zeroth-order steps; inference runs the same number of forward passes on the same batches.
The server half configures the tasks in a process of its own (it holds the global model). The
peak is the child's ``ru_maxrss`` (it includes the interpreter, torch and the tokenizer);
the parent prints a markdown table and asserts nothing.

Example::

    OMP_NUM_THREADS=1 python benchmarks/client_memory.py --model smollm2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

# LoRA with --quant none|int8|nf4; "old-nf4" loads fp32 and quantizes after (the path before
# streaming); "nf4+ckpt" adds gradient checkpointing; "+microM" trains each step's batch M
# examples at a time (RunSpec.micro_batch); --cases may name any such combination.
CASES = (
    "none",
    "int8",
    "nf4",
    "nf4+ckpt",
    "nf4+micro2",
    "nf4+ckpt+micro2",
    "old-nf4",
    "fedkseed",
    "inference",
)


def peak_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def examples(count: int, tokens: int) -> list[Any]:
    """Dialogs long enough to fill ``tokens`` after truncation (no padding waste)."""
    from fedft.runtime.data import Example

    text = " ".join(f"word{i % 97}" for i in range(tokens))
    return [Example(prompt=f"question {i}: {text}", response=text) for i in range(count)]


def spec_for(case: str, args: argparse.Namespace) -> Any:
    """The RunSpec a host would build for ``case``."""
    from fedft.runtime.spec import RunSpec

    strategy = "fedkseed" if case in ("fedkseed", "inference") else "fedavg_lora"
    quant = "nf4" if "nf4" in case else "int8" if case == "int8" else "none"
    return RunSpec(
        strategy=strategy,
        options={"batch_size": args.batch_size, "local_steps": args.steps},
        model=args.model,
        quant=quant,
        device="cpu",
        max_length=args.tokens,
        gradient_checkpointing="+ckpt" in case,
        micro_batch=_micro_batch(case),
    )


def _micro_batch(case: str) -> int | None:
    """M of a case's "+microM" part, or None."""
    for part in case.split("+"):
        if part.startswith("micro"):
            return int(part.removeprefix("micro"))
    return None


def write_tasks(strategy: str, args: argparse.Namespace) -> None:
    """Let the server half configure every round's task and save them for the client children.

    The server half (which holds the global model: fp32 weights for FedKSeed) runs in its own
    process so that it does not count in a client's peak; rounds are configured without
    aggregating, which changes no client's memory.
    """
    import torch

    from fedft.core.strategy import ClientInfo
    from fedft.runtime.assembly import assemble_client
    from fedft.runtime.server_assembly import assemble_server

    spec = spec_for("fedkseed" if strategy == "fedkseed" else "none", args)
    runtime = assemble_client(spec)
    server = assemble_server(spec).server_half
    server.initialize(runtime.initial_state())
    client = ClientInfo("c0", num_examples=args.batch_size * args.steps)
    tasks = [server.configure(r, [client])[0].payload for r in range(1, args.rounds + 1)]
    torch.save(tasks, args.task_file)


def child(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    import torch

    from fedft.core.payload import Payload
    from fedft.runtime.assembly import assemble_client
    from fedft.runtime.models import load_model

    start = time.perf_counter()
    base = peak_mib()
    data = examples(args.batch_size * args.steps, args.tokens)
    spec = spec_for(case, args)
    # The old path: the whole fp32 model first, quantized by the assembly point afterwards.
    bundle = load_model(args.model) if case == "old-nf4" else None
    runtime = assemble_client(spec, bundle=bundle)
    loaded = peak_mib()
    trainer = runtime.trainer(data)
    if case == "inference":
        for round_ in range(args.rounds):
            batches = trainer.batches(batch_size=args.batch_size, seed=round_)  # endless
            for batch in itertools.islice(batches, args.steps):
                trainer.loss(batch)
    else:
        for task in torch.load(args.task_file, weights_only=False):
            runtime.client_half.run(task, Payload(), trainer)
    return {
        "case": case,
        "peak_mib": round(peak_mib(), 1),
        "start_mib": round(base, 1),
        "after_load_mib": round(loaded, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="local steps per round")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--mmap-threshold",
        type=int,
        default=0,
        help="set glibc's MALLOC_MMAP_THRESHOLD_ in the children (0: glibc's dynamic default)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--task-file", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    """Run every case in a child process and print the table."""
    args = parse_args()
    if args.tasks:
        write_tasks(args.tasks, args)
        return
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if args.mmap_threshold:
        # A fixed threshold returns every large freed buffer to the OS at once; glibc's dynamic
        # one raises itself to 32 MB and leaves freed activations fragmenting the heap.
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    folder = tempfile.mkdtemp(prefix="client-memory-")
    task_files = {}
    for strategy in ("fedavg_lora", "fedkseed"):
        task_files[strategy] = os.path.join(folder, f"{strategy}.pt")
        command = [sys.executable, __file__, *sys.argv[1:], "--tasks", strategy]
        command += ["--task-file", task_files[strategy]]
        subprocess.run(command, env=env, check=True, capture_output=True)
    for case in args.cases.split(","):
        task_file = task_files["fedkseed" if case == "fedkseed" else "fedavg_lora"]
        command = [sys.executable, __file__, *sys.argv[1:], "--child", case]
        command += ["--task-file", task_file]
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    by_case = {row["case"]: row for row in rows}
    fp32 = by_case.get("none", {}).get("peak_mib")
    infer = by_case.get("inference", {}).get("peak_mib")
    malloc = (
        f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}" if args.mmap_threshold else "glibc default"
    )
    print(
        f"{args.model}, batch {args.batch_size} x {args.tokens} tokens, {args.rounds} rounds of "
        f"{args.steps} steps, malloc: {malloc}"
    )
    print("| case | peak RSS MiB | vs LoRA fp32 | vs inference | after load MiB | seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        vs_fp32 = f"{row['peak_mib'] / fp32:.2f}x" if fp32 else "-"
        vs_inf = f"{row['peak_mib'] / infer:.3f}x" if infer else "-"
        print(
            f"| {row['case']} | {row['peak_mib']:,.0f} | {vs_fp32} | {vs_inf} "
            f"| {row['after_load_mib']:,.0f} | {row['seconds']} |"
        )


if __name__ == "__main__":
    main()
