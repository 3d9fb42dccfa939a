"""legend vs uniform-rank fedavg_lora (and hetlora) on a mixed device population.

Each strategy runs in the in-process engine on the same model, data split, seed and
``--device-mix``. Round time is the virtual clock of the simulator: each client's CPU time
times its tier's slowdown plus its bytes over its tier's link; the straggler sets the round.
The target eval loss is the highest of the strategies' best losses (so every strategy reaches
it) unless ``--target`` is given. Prints time and bytes to the target and the ratios against
fedavg_lora; writes ``legend_vs_uniform.json`` and ``.png`` into ``--out``. Measures; asserts
nothing.

Examples::

    OMP_NUM_THREADS=1 python benchmarks/legend_vs_uniform.py --model tiny --out /tmp/lvu
    OMP_NUM_THREADS=1 python benchmarks/legend_vs_uniform.py --model smollm2 --rounds 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedft.simulation.engine import InProcessEngine
from fedft.simulation.report import Report
from fedft.simulation.spec import SimulationSpec

BASELINE = "fedavg_lora"


def options_for(strategy: str, args: argparse.Namespace) -> dict[str, Any]:
    """The same LoRA budget and local training for every strategy."""
    common: dict[str, Any] = {
        "local_steps": args.local_steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "alpha": 16,
    }
    if strategy == BASELINE:
        return {**common, "rank": args.rank}
    return {**common, "max_rank": args.rank, "min_rank": args.min_rank}


def run_one(args: argparse.Namespace, strategy: str) -> Report:
    """Run one strategy's simulation into ``--out/STRATEGY``."""
    spec = SimulationSpec(
        model=args.model,
        clients=args.clients,
        rounds=args.rounds,
        seed=args.seed,
        out=args.out / strategy,
        strategy=strategy,
        strategy_options=options_for(strategy, args),
        partition=args.partition,
        rouge_examples=0,
        eval_examples=args.eval_examples,
        device_mix=args.device_mix,
    )
    return InProcessEngine(spec).run()


def curve(report: Report) -> list[tuple[float, float, int]]:
    """(eval loss, cumulative virtual seconds, cumulative bytes) after each round."""
    points, seconds, moved = [], 0.0, 0
    for r in report.rounds:
        seconds += r.seconds
        moved += r.bytes_up + r.bytes_down
        points.append((r.eval_loss, seconds, moved))
    return points


def curve_from_json(rounds: list[dict[str, Any]]) -> list[tuple[float, float, int]]:
    """:func:`curve` of the rounds of a ``report.json``."""
    points, seconds, moved = [], 0.0, 0
    for r in rounds:
        seconds += float(r["seconds"])
        moved += int(r["bytes_up"]) + int(r["bytes_down"])
        points.append((float(r["eval_loss"]), seconds, moved))
    return points


def to_target(
    points: list[tuple[float, float, int]], target: float
) -> tuple[int, float, int] | None:
    """First round (1-based) whose loss is <= target, with the seconds and bytes spent by then."""
    for index, (loss, seconds, moved) in enumerate(points, start=1):
        if loss <= target:
            return index, seconds, moved
    return None


def plot(curves: dict[str, list[tuple[float, float, int]]], target: float, path: Path) -> None:
    """Eval loss against virtual time and against bytes, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_time, by_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in curves.items():
        by_time.plot([p[1] for p in points], [p[0] for p in points], marker="o", label=name)
        by_bytes.plot([p[2] / 1e6 for p in points], [p[0] for p in points], marker="o", label=name)
    for ax in (by_time, by_bytes):
        ax.axhline(target, color="gray", linestyle="--", linewidth=1, label="target loss")
        ax.grid(alpha=0.3)
    by_time.set(xlabel="virtual seconds (straggler per round)", ylabel="eval loss", title="time")
    by_bytes.set(xlabel="cumulative MB (up + down)", ylabel="eval loss", title="communication")
    by_time.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(
    curves: dict[str, list[tuple[float, float, int]]], target: float, title: str
) -> tuple[Table, dict[str, Any]]:
    """The comparison table and its JSON: time and bytes to ``target``, ratios to the baseline."""
    reached = {name: to_target(points, target) for name, points in curves.items()}
    base = reached.get(BASELINE)
    table = Table(title=title)
    columns = (
        "strategy",
        "final loss",
        "s/round",
        "rounds",
        "virtual s",
        "MB",
        "speed-up",
        "saved",
    )
    for column in columns:
        table.add_column(column, justify="right")
    summary: dict[str, Any] = {"target": target}
    for name, hit in reached.items():
        final = curves[name][-1][0]
        per_round = curves[name][-1][1] / len(curves[name])
        row = [name, f"{final:.4f}", f"{per_round:.2f}"]
        entry: dict[str, Any] = {"final_loss": final, "seconds_per_round": per_round}
        entry["curve"] = curves[name]
        if hit is None:
            row += ["-", "-", "-", "-", "-"]
        else:
            rounds, seconds, moved = hit
            entry.update(rounds=rounds, seconds=seconds, bytes=moved)
            speed = saved = "-"
            if base is not None:
                speed = f"{base[1] / seconds:.2f}x"
                saved = f"{100 * (1 - moved / base[2]):.1f}%"
                entry.update(speedup=base[1] / seconds, bytes_saved=1 - moved / base[2])
            row += [str(rounds), f"{seconds:.2f}", f"{moved / 1e6:.3f}", speed, saved]
        summary[name] = entry
        table.add_row(*row)
    return table, summary


def main() -> None:
    """Run the strategies and print time and bytes to the target loss."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=[BASELINE, "legend", "hetlora"])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--device-mix", default="fast:2,medium:1,slow:1")
    parser.add_argument("--partition", default="category")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8, help="uniform rank = legend's max_rank")
    parser.add_argument("--min-rank", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-examples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=None, help="target eval loss")
    parser.add_argument("--out", type=Path, default=Path("runs/legend_vs_uniform"))
    parser.add_argument(
        "--reports",
        nargs="+",
        default=None,
        metavar="NAME=REPORT.json",
        help="summarise finished (or partial) runs instead of running; curves are cut to the "
        "rounds every run has",
    )
    args = parser.parse_args()

    if args.reports:
        curves = {}
        for item in args.reports:
            name, _, path = item.partition("=")
            data = json.loads(Path(path).read_text())
            curves[name] = curve_from_json(data["rounds"])
        common = min(len(points) for points in curves.values())
        curves = {name: points[:common] for name, points in curves.items()}
    else:
        reports = {name: run_one(args, name) for name in args.strategies}
        curves = {name: curve(report) for name, report in reports.items()}
    target = args.target
    if target is None:
        target = max(min(p[0] for p in points) for points in curves.values())
    title = f"{args.model}, {args.clients} clients ({args.device_mix}), target loss {target:.4f}"
    table, summary = summarise(curves, target, title)
    summary["args"] = {k: str(v) for k, v in vars(args).items()}
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, target, args.out / "legend_vs_uniform.png")
    (args.out / "legend_vs_uniform.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'legend_vs_uniform.png'} and {args.out / 'legend_vs_uniform.json'}")


if __name__ == "__main__":
    main()
