"""Synchronous rounds vs FedBuff (``--mode async``) on mixed devices, in virtual seconds (issue 17).

Both runs use the same model, data, seed, strategy and ``--device-mix``, and the same virtual
clock (each client's CPU time times its tier's slowdown, plus its bytes over its link). A sync
round lasts as long as its slowest sampled client; an async run keeps ``--concurrency`` clients
at work and makes a new version every ``--buffer`` updates. The figure of merit is the virtual
time each run needs to first reach the sync run's final held-out loss. Prints a markdown table,
writes a JSON of both curves and, with ``--plot``, loss against virtual seconds. Measures;
asserts nothing.

Example::

    OMP_NUM_THREADS=1 python benchmarks/async_vs_sync.py --plot docs/img/async_vs_sync.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fedft.simulation.console import run_with_progress
from fedft.simulation.spec import SimulationSpec


def one_run(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Run one simulation; its loss after each version/round against cumulative virtual time."""
    spec = SimulationSpec(
        model=args.model,
        clients=args.clients,
        rounds=args.rounds if mode == "sync" else args.max_versions,
        seed=args.seed,
        device_mix=args.device_mix,
        mode=mode,
        buffer=args.buffer,
        max_staleness=args.max_staleness,
        concurrency=args.concurrency,
        out=Path(args.out) / mode,
        eval_examples=args.eval_examples,
        rouge_examples=0,
        strategy_options={"local_steps": args.local_steps, "fraction": args.fraction},
    )
    report = run_with_progress(spec, quiet=True)
    seconds, losses, clock = [0.0], [report.initial["eval_loss"]], 0.0
    updates = [0]
    for entry in report.rounds:
        clock += entry.seconds
        seconds.append(clock)
        losses.append(entry.eval_loss)
        updates.append(updates[-1] + int(entry.metrics.get("accepted", 0)))
    return {"mode": mode, "seconds": seconds, "loss": losses, "updates": updates}


def time_to(run: dict[str, Any], target: float) -> float | None:
    """Virtual seconds until the run's loss first reaches ``target`` (None: never)."""
    for seconds, loss in zip(run["seconds"], run["loss"], strict=True):
        if loss <= target:
            return float(seconds)
    return None


def main() -> None:
    """Run sync, then async until the sync run's final loss or ``--max-versions``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--device-mix", default="fast:10,medium:5,slow:5")
    p.add_argument("--rounds", type=int, default=15, help="sync rounds")
    p.add_argument("--max-versions", type=int, default=60, help="async versions at most")
    p.add_argument("--fraction", type=float, default=0.5, help="clients sampled per sync round")
    p.add_argument("--buffer", type=int, default=5)
    p.add_argument("--max-staleness", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=0, help="0: as many as a sync round")
    p.add_argument("--local-steps", type=int, default=4)
    p.add_argument("--eval-examples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/async_vs_sync")
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    sync = one_run(args, "sync")
    target = sync["loss"][-1]
    runs = [sync, one_run(args, "async")]
    print(f"target: the sync run's final held-out loss, {target:.4f}\n")
    print("| mode | virtual s to target | updates to target | final loss | virtual s total |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        reach = time_to(run, target)
        index = run["seconds"].index(reach) if reach is not None else None
        shown = f"{reach:.2f}" if reach is not None else "not reached"
        used = str(run["updates"][index]) if index is not None else "-"
        print(
            f"| {run['mode']} | {shown} | {used} | {run['loss'][-1]:.4f} "
            f"| {run['seconds'][-1]:.2f} |"
        )
    ratio = [time_to(r, target) for r in runs]
    if ratio[0] and ratio[1] is not None:
        print(f"\nasync / sync virtual time to the target: {ratio[1] / ratio[0]:.2f}x")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "curves.json").write_text(json.dumps({"target": target, "runs": runs}))
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for run in runs:
            ax.plot(run["seconds"], run["loss"], marker=".", label=run["mode"])
        ax.axhline(target, color="grey", linestyle=":", label="sync final loss")
        ax.set_xlabel("virtual seconds")
        ax.set_ylabel("held-out loss")
        ax.set_title(f"{args.model}, {args.clients} clients, {args.device_mix}")
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
