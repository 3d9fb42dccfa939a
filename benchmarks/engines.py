"""The in-process engine vs Flower's Ray engine: wall time and peak memory of the same simulation.

Runs ``fedft simulate`` with the same strategy, model, data split, seed and client count once per
engine, alternating the engines (in-process, flower, in-process, flower, ...) so that a change
in the machine's load hits both alike. Each run is a child process. While it runs, the script
samples the memory of its whole process tree (Ray's raylet, GCS and worker actors included)
and keeps the peak. Memory is PSS, so pages shared between processes count once. Prints one row
per run and the median ratios; ``--json`` saves them. Measures; asserts nothing.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/engines.py                       # 100 clients x 5 rounds
    OMP_NUM_THREADS=1 python benchmarks/engines.py --clients 10 --rounds 2 --repeats 2
    OMP_NUM_THREADS=1 python benchmarks/engines.py --strategy fedkseed --opt local_steps=10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

ENGINES = ("inprocess", "flower")


@dataclass
class Measurement:
    """One simulation run as the benchmark saw it."""

    engine: str
    wall_s: float
    rounds_s: float  # the rounds alone, from report.json: no start-up, no final scoring
    peak_mib: float
    processes: int  # the most processes alive at once in the run's tree
    final_loss: float


def tree_memory(root: psutil.Process) -> tuple[float, int]:
    """Sum the PSS (RSS where PSS is unreadable) of ``root`` and its descendants, in bytes."""
    total, count = 0.0, 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, count


def run_engine(args: argparse.Namespace, engine: str, out: Path) -> Measurement:
    """Run one simulation in a child process and measure it."""
    command = [
        sys.executable, "-m", "fedft.cli", "simulate", "--engine", engine,
        "--strategy", args.strategy, "--model", args.model, "--clients", str(args.clients),
        "--rounds", str(args.rounds), "--partition", args.partition, "--seed", "0",
        "--rouge-examples", "0", "--eval-examples", str(args.eval_examples),
        "--cpus-per-client", str(args.cpus_per_client), "--quiet", "--out", str(out),
        *[f"--opt={pair}" for pair in args.opt],
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(child.pid)
    peak, most = 0.0, 0
    while child.poll() is None:
        used, count = tree_memory(root)
        peak, most = max(peak, used), max(most, count)
        time.sleep(args.sample_s)
    wall = time.perf_counter() - start
    _, stderr = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{engine} run failed ({child.returncode}):\n{stderr.decode()[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return Measurement(
        engine=engine,
        wall_s=round(wall, 2),
        rounds_s=round(sum(r["seconds"] for r in report["rounds"]), 2),
        peak_mib=round(peak / 2**20, 1),
        processes=most,
        final_loss=report["final"]["eval_loss"],
    )


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--strategy", default="fedavg_lora", help="registered strategy")
    p.add_argument("--model", default="tiny", help="tiny, smollm2 or a checkpoint folder")
    p.add_argument("--clients", type=int, default=100, help="virtual clients")
    p.add_argument("--rounds", type=int, default=5, help="federated rounds")
    p.add_argument("--partition", default="iid", help="data split (category needs <= 21 clients)")
    p.add_argument("--eval-examples", type=int, default=16, help="held-out examples per round")
    p.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per client")
    p.add_argument("--repeats", type=int, default=1, help="runs per engine, interleaved")
    p.add_argument("--opt", action="append", default=[], help="strategy option KEY=VALUE")
    p.add_argument("--sample-s", type=float, default=0.25, help="memory sampling period")
    p.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    return p.parse_args()


def main() -> None:
    """Run the interleaved measurements and print the table and ratios."""
    args = parse_args()
    console = Console()
    runs: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="fedft-engines-") as tmp:
        for repeat in range(args.repeats):
            for engine in ENGINES:
                console.print(f"run {repeat + 1}/{args.repeats}: {engine} ...")
                runs.append(run_engine(args, engine, Path(tmp) / f"{engine}-{repeat}"))
                console.print(f"  {runs[-1]}")
    table = Table(
        title=f"{args.strategy} on {args.model}, {args.clients} clients x {args.rounds} rounds"
    )
    for column in ("engine", "wall s", "rounds s", "peak MiB", "processes", "final loss"):
        table.add_column(column, justify="right")
    for m in runs:
        table.add_row(
            m.engine,
            f"{m.wall_s:.1f}",
            f"{m.rounds_s:.1f}",
            f"{m.peak_mib:.0f}",
            str(m.processes),
            f"{m.final_loss:.4f}",
        )
    console.print(table)

    def median(engine: str, key: str) -> float:
        return statistics.median(getattr(m, key) for m in runs if m.engine == engine)

    for key, what in (("wall_s", "wall time"), ("rounds_s", "round time"), ("peak_mib", "memory")):
        ratio = median("flower", key) / median("inprocess", key)
        console.print(f"flower / in-process {what}: {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps([asdict(m) for m in runs], indent=2) + "\n")


if __name__ == "__main__":
    main()
