"""``fedft simulate``: run many clients on this machine with any registered strategy."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedft.simulation.partition import PARTITION_HELP
from fedft.simulation.spec import ENGINES, SimulationSpec

DESCRIPTION = """\
Run a federated fine-tuning simulation on this machine: N virtual clients, each with its own
share of the data, train with a registered strategy for R rounds. Every message between server
and clients goes through the same serialization the coordinator uses, so the byte counts are
real. Writes OUT/report.json (eval loss, bytes and time per round), OUT/report.png and, for LoRA
strategies, the global adapter in PEFT format under OUT/adapter/.

With no flags it runs the embedded default: SmolLM2-135M-Instruct on the chatterbot dialogs,
4 clients split by category, 2 rounds of fedavg_lora."""

EPILOG = """\
examples:
  fedft simulate
  fedft simulate --model tiny --clients 4 --rounds 3 --seed 0 --out runs/tiny
  fedft simulate --partition dirichlet:0.5 --clients 8 --opt lr=5e-4 --opt rank=4
  fedft strategies fedavg_lora      # lists every --opt a strategy accepts"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``simulate`` subcommand."""
    p = subparsers.add_parser(
        "simulate",
        help="run a multi-client simulation on this machine",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = SimulationSpec()
    p.add_argument(
        "--strategy",
        default=defaults.strategy,
        metavar="NAME",
        help="registered strategy (see `fedft strategies`; default: %(default)s)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy option, repeatable, e.g. --opt lr=5e-4 --opt target_modules=q_proj,v_proj",
    )
    p.add_argument(
        "--clients",
        type=int,
        default=defaults.clients,
        metavar="N",
        help="number of virtual clients (default: %(default)s)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=defaults.rounds,
        metavar="R",
        help="federated rounds (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default=defaults.model,
        metavar="tiny|smollm2|PATH",
        help="tiny: a 4-layer random Llama for tests; smollm2: the embedded SmolLM2-135M-"
        "Instruct (converted once into ~/.cache/fedft); PATH: a local Hugging Face "
        "checkpoint folder (default: %(default)s)",
    )
    p.add_argument(
        "--dataset",
        default=defaults.dataset,
        metavar="chatterbot|PATH",
        help="chatterbot: the embedded English dialogs (21 categories); PATH: a JSONL file "
        "with prompt/response (or instruction/output, or messages) and an optional "
        "category per line (default: %(default)s)",
    )
    p.add_argument(
        "--partition",
        default=defaults.partition,
        metavar="SPEC",
        help=f"how training data is split among clients: {PARTITION_HELP} (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        metavar="S",
        help="seed of everything random; the same seed gives the same report "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder (default: runs/STRATEGY-MODEL-seedS)",
    )
    p.add_argument(
        "--engine",
        default=defaults.engine,
        choices=ENGINES,
        help="inprocess: all clients in this process (default: %(default)s)",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=defaults.max_length,
        metavar="T",
        help="tokens per example, prompt + answer (default: %(default)s)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        metavar="F",
        help="fraction of the data held out from every client (default: %(default)s)",
    )
    p.add_argument(
        "--eval-examples",
        type=int,
        default=defaults.eval_examples,
        metavar="N",
        help="held-out examples scored for eval loss after each round (default: %(default)s)",
    )
    p.add_argument(
        "--rouge-examples",
        type=int,
        default=defaults.rouge_examples,
        metavar="N",
        help="held-out prompts answered by the final model for Rouge-L; 0 skips "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=defaults.max_new_tokens,
        metavar="N",
        help="answer length for Rouge-L generation (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress display and no summary table")
    p.set_defaults(handler=run)


def spec_from_args(args: argparse.Namespace) -> SimulationSpec:
    """Build a validated spec from parsed arguments."""
    from fedft.core.config import parse_overrides
    from fedft.simulation.engine import build_strategy

    base = SimulationSpec(
        strategy=args.strategy,
        model=args.model,
        dataset=args.dataset,
        clients=args.clients,
        rounds=args.rounds,
        partition=args.partition,
        seed=args.seed,
        out=args.out or Path("runs") / f"{args.strategy}-{Path(args.model).name}-seed{args.seed}",
        engine=args.engine,
        max_length=args.max_length,
        test_fraction=args.test_fraction,
        eval_examples=args.eval_examples,
        rouge_examples=args.rouge_examples,
        max_new_tokens=args.max_new_tokens,
    )
    strategy, _ = build_strategy(base)
    options = parse_overrides(strategy.config_cls, args.opt)
    spec = SimulationSpec(**{**base.__dict__, "strategy_options": options})
    build_strategy(spec)  # validate the options now, before loading any model
    return spec


def run(args: argparse.Namespace) -> int:
    """Run the simulation described by ``args`` and print a summary."""
    from fedft.simulation.console import run_with_progress

    spec = spec_from_args(args)
    run_with_progress(spec, quiet=args.quiet)
    return 0
