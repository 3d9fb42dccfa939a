"""``fedft serve``: run the coordinator daemon for one federated run."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Run the coordinator: a gRPC service that enrolls clients, hands out one task per sampled client
per round, stores every accepted update durably before acknowledging it, and aggregates with the
chosen strategy. State lives in --db (SQLite by default, PostgreSQL via URL); restarting with
the same --db resumes the run where it stopped, open round included.

--mode async runs FedBuff instead of rounds: a client gets a task whenever it asks, trained from
the global model as it is at that moment, and every --buffer accepted updates become the next
version; an update counts 1/sqrt(1 + staleness) and one more than --max-staleness versions old
is refused. Acknowledged updates are as durable as in rounds; the run keeps its mode for life.

--secagg runs every round as SecAgg+: devices send their updates only masked, and the
coordinator learns each round's sum alone, even when some devices drop out mid-round. The
round's stages (keys, shares, masked updates, unmask) each wait --secagg-stage-timeout seconds
(the masked updates --round-timeout); a round that cannot finish applies nothing, and the next
one runs. A run keeps --secagg for life.

TLS is on by default: create certificates once with `fedft certs init --out DIR --host NAME`
and pass --certs DIR. --insecure (plaintext) is accepted only on a loopback address."""

EPILOG = """\
example:
  fedft certs init --out certs --host coordinator.example.org
  fedft token create --db sqlite:///coordinator.db --count 3
  fedft serve --db sqlite:///coordinator.db --certs certs --model smollm2 --rounds 5
  fedft serve --db sqlite:///async.db --certs certs --mode async --buffer 4 --rounds 50"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``serve`` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="run the coordinator service",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--strategy",
        default="fedavg_lora",
        metavar="NAME",
        help="registered strategy (see `fedft strategies`; default: %(default)s)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy option, repeatable (see `fedft strategies NAME`)",
    )
    p.add_argument(
        "--rounds", type=int, default=3, metavar="R", help="number of rounds (default: %(default)s)"
    )
    p.add_argument(
        "--model",
        default="smollm2",
        metavar="tiny|smollm2|PATH",
        help="base model every client trains; the coordinator loads it once to build "
        "the initial global state (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of client sampling and local training (default: %(default)s)",
    )
    p.add_argument(
        "--db",
        default="sqlite:///fedft-coordinator.db",
        metavar="URL",
        help="state database: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--bind",
        default="0.0.0.0:50051",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one (default: %(default)s)",
    )
    p.add_argument(
        "--certs",
        type=Path,
        default=Path("fedft-certs"),
        metavar="DIR",
        help="folder from `fedft certs init` with server.pem and server.key (default: %(default)s)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext gRPC; only allowed on a loopback --bind",
    )
    p.add_argument(
        "--round-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="seconds a round waits for updates before aggregating what arrived "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--min-clients",
        type=int,
        default=1,
        metavar="N",
        help="live clients needed before a round starts (default: %(default)s)",
    )
    p.add_argument(
        "--liveness",
        type=float,
        default=60.0,
        metavar="S",
        help="a client counts as alive if heard from within S seconds (default: %(default)s)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="S",
        help="heartbeat interval clients are told to keep (default: %(default)s)",
    )
    p.add_argument(
        "--max-update-mb",
        type=float,
        default=1024.0,
        metavar="MB",
        help="largest update accepted, in MB (default: %(default)s)",
    )
    p.add_argument(
        "--max-examples",
        type=int,
        default=1_000_000,
        metavar="N",
        help="most examples one update may claim as its weight; never above what the client's "
        "device reported (default: %(default)s)",
    )
    p.add_argument(
        "--max-update-norm",
        type=float,
        default=None,
        metavar="B",
        help="refuse updates whose change to the global model has an L2 norm above B",
    )
    p.add_argument(
        "--serve-model",
        action="store_true",
        help="let clients download the base model files (`fedft client --model server`)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="expose Prometheus metrics on http://127.0.0.1:PORT/metrics",
    )
    p.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="DIR",
        help="when the run is finished, write the global model there (PEFT adapters for LoRA "
        "strategies, full safetensors weights for seed-based ones)",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=30.0,
        metavar="S",
        help="keep serving S seconds after the last round so clients learn the run is "
        "over (default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=128,
        metavar="N",
        help="RPC worker threads (each long poll holds one; default: %(default)s)",
    )
    from fedft.cli.privacy_flags import add_dp_flags, add_robust_flags, add_secagg_flags
    from fedft.cli.run_flags import add_mode_flags, add_participation_flag

    add_mode_flags(p)
    add_robust_flags(p)
    add_secagg_flags(p, stage_timeout=True)
    add_participation_flag(p)
    add_dp_flags(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Start the coordinator and serve until the run is finished."""
    from fedft.cli.coordinator_setup import coordinator_setup, export_global
    from fedft.core.errors import UsageError
    from fedft.server.app import CoordinatorService, split_address
    from fedft.server.tls import is_loopback

    if args.rounds < 1:
        raise UsageError("--rounds must be >= 1")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise UsageError(f"--metrics-port must be 0-65535, got {args.metrics_port}")
    # Refuse a bad transport before spending seconds on loading the model.
    host, _ = split_address(args.bind)
    if args.insecure and not is_loopback(host):
        raise UsageError(f"--insecure is for loopback only; {host} is not a loopback address")
    if not args.insecure and not (args.certs / "server.pem").is_file():
        raise UsageError(
            f"no server.pem in {args.certs}: run `fedft certs init --out {args.certs}`"
        )
    if not args.insecure:
        from fedft.server.tls import server_credentials

        server_credentials(args.certs)  # a broken pair fails here, before the model loads
    setup = coordinator_setup(args)
    coordinator = setup.coordinator
    cert_dir = None if args.insecure else args.certs
    service = CoordinatorService(
        coordinator,
        address=args.bind,
        cert_dir=cert_dir,
        model_dir=setup.runtime.bundle.path if args.serve_model else None,
        max_workers=args.workers,
        metrics_port=args.metrics_port,
    )
    port = service.start()
    scheme = "plaintext" if cert_dir is None else "TLS"
    host = args.bind.rpartition(":")[0]
    print(
        f"fedft coordinator listening on {host}:{port} ({scheme}), run {coordinator.run.run_id}",
        flush=True,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.warning("signal %d: stopping", signum)
        coordinator.stop()

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not service.wait(timeout=1.0):
            pass
    except KeyboardInterrupt:
        coordinator.stop()
    if coordinator.finished():
        print(f"run finished after {coordinator.settings.rounds} rounds", flush=True)
        if args.export is not None:
            export_global(setup, args.export)
            print(f"wrote the global model to {args.export}", flush=True)
        time.sleep(max(args.linger, 0.0))
    service.stop()
    return 0
