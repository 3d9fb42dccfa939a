"""``fedft status``: rounds, progress and clients of a run, from its database or its coordinator."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedft.core.status import RunStatus


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``status`` subcommand."""
    p = subparsers.add_parser(
        "status",
        help="show a run's rounds and clients",
        description="Show a run's rounds (progress, bytes, metrics) and its clients (liveness). "
        "Read the coordinator's database directly with --db (works while it runs, or after), "
        "or ask a running coordinator with --server using an enrolled client's identity.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", metavar="URL", help="the coordinator's state database")
    source.add_argument("--server", metavar="HOST:PORT", help="a running coordinator")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --server: the enrolled identity to sign with "
        "(default: the `fedft client` default for that server)",
    )
    p.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="with --server: the coordinator's CA certificate",
    )
    p.add_argument(
        "--insecure", action="store_true", help="with --server: plaintext, loopback only"
    )
    p.add_argument(
        "--liveness",
        type=float,
        default=60.0,
        metavar="S",
        help="with --db: a client is alive if seen within S seconds (default: %(default)s)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the status tables."""
    from fedft.core.errors import UsageError

    status = _from_db(args) if args.db else _from_server(args)
    if status is None:
        raise UsageError("this database holds no run yet")
    Console().print(render(status))
    return 0


def _from_db(args: argparse.Namespace) -> RunStatus | None:
    from fedft.server.state.factory import open_state
    from fedft.server.status import run_status

    state = open_state(args.db, create=False)
    try:
        return run_status(state, liveness_s=args.liveness, now=time.time())
    finally:
        state.close()


def _from_server(args: argparse.Namespace) -> RunStatus:
    import grpc

    from fedft.cli.client_cmd import default_state_dir
    from fedft.client.connection import Connection
    from fedft.client.identity_store import ClientStore
    from fedft.client.tls import channel_credentials
    from fedft.core.errors import UsageError

    store = ClientStore(args.state_dir or default_state_dir(args.server))
    identity = store.load_identity(args.server)
    if identity is None:
        raise UsageError(f"no enrolled identity in {store.folder}; pass --state-dir")
    credentials = None if args.insecure else channel_credentials(args.ca) if args.ca else None
    if credentials is None and not args.insecure:
        raise UsageError("pass --ca PEM, or --insecure for a loopback coordinator")
    connection = Connection(args.server, credentials=credentials, timeout_s=10.0)
    connection.use_identity(identity.client_id, identity.key)
    try:
        return connection.status()
    except grpc.RpcError as exc:
        raise UsageError(f"cannot get the status from {args.server}: {exc.details()}") from None
    finally:
        connection.close()


def render(status: RunStatus) -> Table:
    """Return one table with the run's rounds, captioned with its clients."""
    state = "finished" if status.finished else f"round {status.current_round}/{status.rounds_total}"
    table = Table(title=f"run {status.run_id[:12]} · {status.strategy} on {status.model} · {state}")
    for name in ("round", "status", "updates/tasks", "MB up", "MB down", "metrics"):
        table.add_column(name, justify="left" if name in ("status", "metrics") else "right")
    for r in status.rounds:
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.metrics.items()
        )
        table.add_row(
            str(r.round),
            r.status,
            f"{r.updates}/{r.tasks}",
            f"{r.bytes_up / 1e6:.2f}",
            f"{r.bytes_down / 1e6:.2f}",
            metrics,
        )
    alive = sum(c.alive for c in status.clients)
    names = ", ".join(f"{c.client_id}{'' if c.alive else ' (gone)'}" for c in status.clients[:20])
    more = f" and {len(status.clients) - 20} more" if len(status.clients) > 20 else ""
    table.caption = f"{len(status.clients)} clients, {alive} alive: {names}{more}"
    return table
