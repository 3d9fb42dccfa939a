"""``fedft audit``: epsilon from the privacy ledger, and the one-shot empirical estimate."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Audit how much privacy a run spent. The analytical epsilon composes the run's privacy ledger
(one entry per round: noise multiplier, clip norm, sampling rate) with dp-accounting: PLD is
the reported value, RDP a cross-check. If the run inserted canary clients (--canaries), the
one-shot empirical estimate (Andrew et al. 2024) compares the cosines of inserted and unseen
canaries with the final model delta. Writes audit.json and audit.png.

With --plan, nothing is read: the noise multiplier that reaches --target-epsilon after
--rounds rounds at --sampling-rate is calibrated instead."""

EPILOG = """\
examples:
  fedft audit --run runs/dp
  fedft audit --db sqlite:///fedft-coordinator.db --delta 1e-6 --out audit/
  fedft audit --plan --target-epsilon 8 --rounds 500 --sampling-rate 0.01"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``audit`` subcommand."""
    p = subparsers.add_parser(
        "audit",
        help="privacy spent by a run: epsilon from the ledger, empirical estimate from canaries",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, metavar="DIR", help="a `fedft simulate` output folder")
    source.add_argument("--db", metavar="URL", help="a coordinator's state database")
    source.add_argument(
        "--plan", action="store_true", help="calibrate the noise multiplier for a target epsilon"
    )
    p.add_argument("--delta", type=float, default=1e-5, help="the DP delta (default: %(default)s)")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="failure probability of the empirical lower bound (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where audit.json and audit.png go (default: the --run folder, or . for --db)",
    )
    p.add_argument("--target-epsilon", type=float, default=None, metavar="E", help="with --plan")
    p.add_argument("--rounds", type=int, default=None, metavar="T", help="with --plan")
    p.add_argument(
        "--sampling-rate",
        type=float,
        default=1.0,
        metavar="Q",
        help="with --plan: per-round client sampling rate (default: %(default)s)",
    )
    p.set_defaults(handler=run)


def _plan(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fedft.core.errors import UsageError
    from fedft.privacy.accounting import plan_noise

    if args.target_epsilon is None or args.rounds is None:
        raise UsageError("--plan needs --target-epsilon and --rounds")
    console = Console()
    with console.status("calibrating the noise multiplier ..."):
        plan = plan_noise(
            args.target_epsilon, args.delta, sampling_rate=args.sampling_rate, rounds=args.rounds
        )
    table = Table(title=f"noise for epsilon {args.target_epsilon:g} at delta {args.delta:g}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rdp = "-" if plan.epsilon_rdp is None else f"{plan.epsilon_rdp:.4f}"
    for name, value in (
        ("rounds", str(plan.rounds)),
        ("sampling rate", f"{plan.sampling_rate:g}"),
        ("noise multiplier (--dp-noise)", f"{plan.noise_multiplier:.4f}"),
        ("epsilon, PLD", f"{plan.epsilon_pld:.4f}"),
        ("epsilon, RDP", rdp),
    ):
        table.add_row(name, value)
    console.print(table)
    return 0


def run(args: argparse.Namespace) -> int:
    """Audit a run folder or a coordinator database, or plan the noise."""
    from rich.console import Console

    from fedft.privacy.audit import AuditInput, audit
    from fedft.privacy.report import print_audit, write_json, write_png

    if args.plan:
        return _plan(args)
    data: AuditInput
    if args.run is not None:
        from fedft.privacy.run_dir import load_run

        data = load_run(args.run)
        out = args.out or args.run
    else:
        from fedft.server.privacy_source import audit_input
        from fedft.server.state.factory import open_state

        state = open_state(args.db, create=False)  # an audit never creates a database
        try:
            data = audit_input(state, args.db)
        finally:
            state.close()
        out = args.out or Path(".")
    console = Console()
    with console.status("composing the ledger and scoring canaries ..."):
        result = audit(data, args.delta, alpha=args.alpha)
    json_path = write_json(result, out)
    png_path = write_png(result, out)
    print_audit(console, result)
    console.print(f"wrote {json_path} and {png_path}")
    return 0
