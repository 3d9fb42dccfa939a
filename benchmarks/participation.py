"""FedAvg vs FedAU when availability is tied to the data (issue 17).

chatterbot split by category over 20 clients, ``--availability bernoulli-by-category:LOW,HIGH``
(the categories get probabilities evenly spaced from LOW to HIGH), the tiny model, fedavg_lora
with and without ``--participation fedau``. After every round the global model is scored on the
whole held-out set and on its examples from the rarely-present categories (probability at most
``--rare``). Both runs see exactly the same availability schedule (same seed). Prints a markdown
table, writes a JSON of every figure and a plot. Measures; asserts nothing.

Example::

    OMP_NUM_THREADS=1 python benchmarks/participation.py --plot docs/img/participation.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from fedft.simulation.data_split import split_data
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec


def one_run(args: argparse.Namespace, participation: str, seed: int) -> dict[str, Any]:
    """Run one simulation; the held-out loss after each round, overall and on rare categories."""
    spec = SimulationSpec(
        model=args.model,
        clients=args.clients,
        rounds=args.rounds,
        seed=seed,
        partition="category",
        availability=f"bernoulli-by-category:{args.low},{args.high}",
        participation=participation,
        out=Path(args.out) / f"{participation}-seed{seed}",
        eval_examples=args.eval_examples,
        rouge_examples=0,
        strategy_options={
            "local_steps": args.local_steps,
            **({"batch_size": args.batch_size} if args.batch_size else {}),
        },
    )
    held_out = split_data(spec).eval_set
    overall: list[float] = []
    rare: list[float] = []
    engine: InProcessEngine | None = None

    def score(event: str, done: int, total: int) -> None:
        # "round" fires before each round and once after the last: the model after `done` rounds.
        if event != "round" or engine is None:
            return
        state = engine.server_half.global_state()
        overall.append(engine.runtime.evaluate(state, held_out))
        rare.append(engine.runtime.evaluate(state, rare_set))

    engine = InProcessEngine(spec, progress=score)
    levels = engine.availability.category_probability()
    rare_categories = sorted(c for c, p in levels.items() if p <= args.rare)
    rare_set = [ex for ex in held_out if ex.category in rare_categories]
    started = time.perf_counter()
    report = engine.run()
    return {
        "participation": participation,
        "seed": seed,
        "overall": overall,
        "rare": rare,
        "rare_categories": rare_categories,
        "rare_examples": len(rare_set),
        "held_out_examples": len(held_out),
        "participants": [r.participants for r in report.rounds],
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(runs: list[dict[str, Any]], rounds: int) -> str:
    """Markdown: held-out loss at a few rounds, overall and rare, per method (mean over seeds)."""
    marks = sorted({0, rounds // 4, rounds // 2, (3 * rounds) // 4, rounds})
    lines = [
        "| method | set | " + " | ".join(f"round {m}" for m in marks) + " |",
        "|---|---|" + "---|" * len(marks),
    ]
    for method in ("none", "fedau"):
        mine = [r for r in runs if r["participation"] == method]
        name = "FedAvg" if method == "none" else "FedAU"
        for key in ("overall", "rare"):
            means = [sum(r[key][m] for r in mine) / len(mine) for m in marks]
            lines.append(f"| {name} | {key} | " + " | ".join(f"{v:.4f}" for v in means) + " |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path, model: str) -> None:
    """Held-out loss over rounds, overall and on rare categories, both methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, key, title in zip(
        axes, ("overall", "rare"), ("all held-out", "rarely-present categories"), strict=True
    ):
        for method, color in (("none", "tab:blue"), ("fedau", "tab:orange")):
            mine = [r for r in runs if r["participation"] == method]
            curve = [sum(v) / len(v) for v in zip(*(r[key] for r in mine), strict=True)]
            label = "FedAvg" if method == "none" else "FedAU"
            ax.plot(range(len(curve)), curve, marker="o", markersize=3, color=color, label=label)
        ax.set(xlabel="round", ylabel="held-out loss", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"fedavg_lora, {model}, clients by category, bernoulli-by-category")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Parse the flags, run both methods for every seed, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--low", type=float, default=0.1)
    parser.add_argument("--high", type=float, default=0.9)
    parser.add_argument("--rare", type=float, default=0.3, help="rare: probability <= this")
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--eval-examples", type=int, default=200)
    parser.add_argument(
        "--batch-size", type=int, default=0, help="local batch size (0: the strategy's default)"
    )
    parser.add_argument("--out", default="runs/participation")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    runs = [
        one_run(args, method, int(seed))
        for seed in args.seeds.split(",")
        for method in ("none", "fedau")
    ]
    print(table(runs, args.rounds))
    first = runs[0]
    print(
        f"\nrare categories (p <= {args.rare}): {', '.join(first['rare_categories'])}; "
        f"{first['rare_examples']} of {first['held_out_examples']} held-out examples; "
        f"seconds per run: {', '.join(str(r['seconds']) for r in runs)}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    if args.plot is not None:
        plot(runs, args.plot, args.model)


if __name__ == "__main__":
    main()
