"""fedavg_lora vs fedkseed vs ferret on one federation: eval loss per round and bytes moved.

Runs each strategy with the in-process engine on the same model, data split and seed (the
embedded default: SmolLM2-135M on chatterbot dialogs, one category per client), then prints
one table (eval loss and cumulative MB per round) and writes ``compare.png`` and
``compare.json`` into ``--out``. Measures; asserts nothing.

Examples::

    python benchmarks/compare_strategies.py --out runs/compare
    python benchmarks/compare_strategies.py --model tiny --rounds 3 --out /tmp/compare
    python benchmarks/compare_strategies.py --opt fedkseed.trainable=self_attn --opt ferret.seeds=64
    python benchmarks/compare_strategies.py --reuse   # only runs what --out does not hold yet
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedft.simulation.engine import InProcessEngine, build_strategy
from fedft.simulation.report import Report, read_report
from fedft.simulation.spec import SimulationSpec

# CPU-sized defaults: ZO over all 135 M weights costs ~1 s per step on 2 cores, so fedkseed
# tunes attention only here, and ferret the same set; pass --opt to change any of them.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "fedavg_lora": {"local_steps": 5, "batch_size": 4},
    "fedkseed": {"local_steps": 100, "trainable": "self_attn", "lr": 1e-5},
    "fedkseed_pro": {"local_steps": 100, "trainable": "self_attn", "lr": 1e-5},
    # Ferret on all weights at lr 1e-4 diverges (issue 4 notes in docs/results.md): AdamW moves
    # every one of the 28 M embedding values, and 64 bases reconstruct that with ~600x noise.
    "ferret": {
        "local_steps": 5,
        "batch_size": 4,
        "lr": 1e-4,
        "seeds": 64,
        "trainable": "self_attn",
    },
}


def parse_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """Turn ``strategy.key=value`` strings into per-strategy option dicts (values as JSON)."""
    options = {name: dict(values) for name, values in DEFAULT_OPTIONS.items()}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        strategy, dot, option = key.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--opt expects strategy.key=value, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        options.setdefault(strategy, {})[option] = value
    return options


def run_one(args: argparse.Namespace, strategy: str, options: dict[str, Any]) -> Report:
    """Run one strategy's simulation into ``--out/STRATEGY``."""
    spec = SimulationSpec(
        model=args.model,
        clients=args.clients,
        rounds=args.rounds,
        seed=args.seed,
        out=args.out / strategy,
        strategy=strategy,
        strategy_options=options,
        partition="category",
        rouge_examples=0,
    )
    if args.reuse:
        previous = finished_report(spec, args.rounds)
        if previous is not None:
            print(f"{strategy}: reusing {spec.out / 'report.json'}")
            return previous
    return InProcessEngine(spec).run()


def finished_report(spec: SimulationSpec, rounds: int) -> Report | None:
    """Return the report of an identical, completed earlier run in ``spec.out``, or None."""
    path = spec.out / "report.json"
    if not path.is_file():
        return None
    report = read_report(path)
    _, config = build_strategy(spec)
    same = (report.model, report.clients, report.seed, report.partition, report.config) == (
        spec.model,
        spec.clients,
        spec.seed,
        spec.partition,
        json.loads(json.dumps(config.to_dict())),
    )
    return report if same and len(report.rounds) == rounds and report.final else None


def plot(reports: dict[str, Report], path: Path) -> None:
    """Eval loss against cumulative MB moved, one line per strategy (log-scale bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_round, by_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for name, report in reports.items():
        losses = [report.initial["eval_loss"]] + [r.eval_loss for r in report.rounds]
        cumulative, total = [0.0], 0
        for r in report.rounds:
            total += r.bytes_up + r.bytes_down
            cumulative.append(total / 1e6)
        by_round.plot(range(len(losses)), losses, marker="o", label=name)
        by_bytes.plot(cumulative[1:], losses[1:], marker="o", label=name)
    by_round.set(xlabel="round", ylabel="eval loss", title="eval loss per round")
    by_round.xaxis.get_major_locator().set_params(integer=True)
    by_bytes.set(xlabel="cumulative MB (up + down)", ylabel="eval loss", xscale="log")
    by_bytes.set_title("eval loss against bytes moved")
    by_round.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Run the strategies and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=["fedavg_lora", "fedkseed", "ferret"])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--opt", action="append", default=[], help="strategy.key=value")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse a strategy's finished report in --out when its settings are identical",
    )
    args = parser.parse_args()
    options = parse_options(args.opt)
    reports = {name: run_one(args, name, options.get(name, {})) for name in args.strategies}

    table = Table(title=f"{args.model}, {args.clients} clients, seed {args.seed}")
    table.add_column("round", justify="right")
    for name in reports:
        table.add_column(f"{name} loss", justify="right")
        table.add_column(f"{name} MB", justify="right")
    for index in range(args.rounds + 1):
        row = [str(index)]
        for report in reports.values():
            if index == 0:
                row += [f"{report.initial['eval_loss']:.4f}", "0"]
                continue
            moved = sum(r.bytes_up + r.bytes_down for r in report.rounds[:index])
            row += [f"{report.rounds[index - 1].eval_loss:.4f}", f"{moved / 1e6:.3f}"]
        table.add_row(*row)
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(reports, args.out / "compare.png")
    summary = {
        name: {
            "options": options.get(name, {}),
            "eval_loss": [report.initial["eval_loss"]] + [r.eval_loss for r in report.rounds],
            "bytes_per_round": [r.bytes_up + r.bytes_down for r in report.rounds],
        }
        for name, report in reports.items()
    }
    (args.out / "compare.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'compare.png'} and {args.out / 'compare.json'}")


if __name__ == "__main__":
    main()
