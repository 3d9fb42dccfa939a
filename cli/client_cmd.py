"""``fedft client``: the edge daemon that trains on local data for a coordinator."""

from __future__ import annotations

import argparse
import re
import signal
from pathlib import Path
from types import FrameType

from fedft.core.device import DEVICE_HELP

DESCRIPTION = """\
Run an edge client. On first start it enrolls with --token (a one-time token from the operator)
and stores its identity (an Ed25519 key that signs every request) under --state-dir; later
starts reuse it. It loads the base model once and keeps it loaded, long-polls the coordinator
for tasks, trains on --data with the coordinator's strategy, and sends the update back. If the
coordinator goes away it retries with exponential backoff; if the client is restarted it
resumes with its stored identity and strategy state. It exits when the run is finished."""

EPILOG = """\
example:
  fedft client --server coordinator.example.org:50051 --ca ca.pem --token fedft_... \\
               --data my_dialogs.jsonl"""


def default_state_dir(server: str) -> Path:
    """Return ``~/.local/share/fedft/clients/<server>``, one folder per coordinator."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", server)
    return Path.home() / ".local" / "share" / "fedft" / "clients" / safe


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``client`` subcommand."""
    p = subparsers.add_parser(
        "client",
        help="run an edge client daemon",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", required=True, metavar="HOST:PORT", help="the coordinator's address")
    p.add_argument(
        "--data",
        default="chatterbot",
        metavar="PATH|chatterbot|sharegpt",
        help="local training data: a JSONL file or ShareGPT-format .json (see docs/data.md), the "
        "embedded chatterbot dialogs or the sharegpt package's conversations "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="tiny|smollm2|PATH|server",
        help="base model: a preset, a local checkpoint folder, or `server` to download "
        "it from the coordinator (default: the coordinator's, if it is a preset)",
    )
    p.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="one-time enrollment token; needed only on the first start",
    )
    p.add_argument(
        "--client-id",
        default="",
        metavar="NAME",
        help="id to ask for at enrollment (lowercase letters, digits, . _ -); "
        "default: one chosen by the coordinator",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where identity, key and strategy state live "
        "(default: ~/.local/share/fedft/clients/SERVER)",
    )
    p.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="the coordinator's CA certificate (ca.pem from `fedft certs init`)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext gRPC, for a coordinator on this machine only",
    )
    p.add_argument(
        "--max-length",
        type=int,
        default=128,
        metavar="T",
        help="tokens per training example (default: %(default)s)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=10.0,
        metavar="S",
        help="long-poll wait for a task, in seconds (default: %(default)s)",
    )
    p.add_argument(
        "--max-backoff",
        type=float,
        default=30.0,
        metavar="S",
        help="longest pause between reconnection attempts (default: %(default)s)",
    )
    from fedft.cli.privacy_flags import add_local_dp_flags
    from fedft.cli.run_flags import (
        add_autocast_flag,
        add_checkpointing_flag,
        add_micro_batch_flag,
        add_quant_flag,
    )

    add_local_dp_flags(p)
    add_quant_flag(p)
    add_checkpointing_flag(p)
    add_micro_batch_flag(p)
    add_autocast_flag(p)
    p.add_argument(
        "--memory-budget",
        default=None,
        metavar="SIZE",
        help="fit training into SIZE (e.g. 1.5GiB): choose --quant, --gradient-checkpointing "
        "and --micro-batch from an estimate of the peak, changing training as little as "
        "possible, and report the budget in the device profile; needs --model",
    )
    p.add_argument(
        "--require-dp-noise",
        type=float,
        default=0.0,
        metavar="Z",
        help="send this device's update only inside a secure sum whose devices add noise of "
        "multiplier Z or more (`fedft serve --secagg --dp-distributed`); other tasks are sat "
        "out (default: take part in any task)",
    )
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP)
    p.add_argument(
        "--simulate-device",
        default=None,
        choices=("fast", "medium", "slow"),
        help="simulation only: report this device tier's profile (the measured one slowed down) "
        "and virtual task times, as `fedft simulate --engine grpc --device-mix` does",
    )
    p.add_argument(
        "--simulate-absent-rounds",
        default="",
        metavar="R,R,...",
        help="simulation only: rounds this device is away and sits out, as `fedft simulate "
        "--engine grpc --availability` asks",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the client daemon until the coordinator's run is finished."""
    from rich.console import Console

    from fedft.cli.privacy_flags import local_dp_config_from_args
    from fedft.client.daemon import ClientDaemon, DaemonOptions
    from fedft.client.tls import channel_credentials
    from fedft.core.device import check_device_name
    from fedft.core.errors import UsageError

    host = args.server.rpartition(":")[0].strip("[]")
    if args.insecure:
        if host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("127."):
            raise UsageError("--insecure is only allowed for a coordinator on this machine")
        credentials = None
    elif args.ca is None:
        raise UsageError("pass --ca PEM (the coordinator's ca.pem) or, for loopback, --insecure")
    else:
        credentials = channel_credentials(args.ca)
    console = Console(stderr=True)
    plan = memory_plan_from_args(args)
    options = DaemonOptions(
        server=args.server,
        data=args.data,
        state_dir=args.state_dir or default_state_dir(args.server),
        credentials=credentials,
        model=args.model,
        token=args.token,
        client_id=args.client_id,
        max_length=args.max_length,
        poll_s=args.poll,
        max_backoff_s=args.max_backoff,
        local_dp=local_dp_config_from_args(args),
        require_dp_noise=_noise_floor(args.require_dp_noise),
        quant=args.quant,
        gradient_checkpointing=args.gradient_checkpointing,
        micro_batch=args.micro_batch,
        autocast=args.autocast,
        memory_budget_mb=None if plan is None else plan[0],
        memory_plan=None if plan is None else plan[1],
        simulate_device=args.simulate_device,
        simulate_absent_rounds=_rounds(args.simulate_absent_rounds),
        device=check_device_name(args.device),
    )
    daemon = ClientDaemon(options, report=console.log)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    return daemon.run()


def memory_plan_from_args(args: argparse.Namespace) -> tuple[float, str] | None:
    """Apply ``--memory-budget``'s plan to ``args``; return (budget MiB, its description)."""
    if args.memory_budget is None:
        return None
    from fedft.core.errors import UsageError
    from fedft.runtime.memory_plan import (
        MIB,
        model_shape,
        parse_budget,
        plan_for_budget,
        return_freed_memory,
    )
    from fedft.runtime.models import resolve_model

    if args.quant != "none" or args.gradient_checkpointing or args.micro_batch is not None:
        raise UsageError(
            "--memory-budget chooses --quant, --gradient-checkpointing and --micro-batch itself; "
            "leave them out"
        )
    if args.model in (None, "server"):
        raise UsageError("--memory-budget needs --model: the plan is made before training starts")
    budget = parse_budget(args.memory_budget)
    plan = plan_for_budget(
        budget, model_shape(resolve_model(args.model)), max_length=args.max_length
    )
    args.quant, args.gradient_checkpointing = plan.quant, plan.gradient_checkpointing
    args.micro_batch = plan.micro_batch
    return_freed_memory()  # the estimate assumes freed activations go back to the system
    return budget / MIB, f"memory budget {budget / MIB:,.0f} MiB: {plan.describe()}"


def _rounds(text: str) -> frozenset[int]:
    """Parse ``--simulate-absent-rounds``: comma-separated round numbers."""
    from fedft.core.errors import UsageError

    try:
        return frozenset(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--simulate-absent-rounds: {text!r} is not R,R,...") from None


def _noise_floor(value: float) -> float:
    """Validate --require-dp-noise."""
    import math

    from fedft.core.errors import UsageError

    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"--require-dp-noise must be >= 0, got {value}")
    return value
