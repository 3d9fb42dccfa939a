"""Entry point of the ``fedft`` console script: subcommands, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

# Set before anything imports huggingface_hub: nothing may be fetched from a hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

EXIT_USAGE = 2


def _version() -> str:
    try:
        return version("fedft")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    from fedft.cli import (
        audit_cmd,
        certs_cmd,
        client_cmd,
        db_cmd,
        serve_cmd,
        status_cmd,
        strategies_cmd,
        token_cmd,
    )
    from fedft.simulation import cli as simulate_cmd

    parser = argparse.ArgumentParser(
        prog="fedft",
        description="Federated fine-tuning of language models: LoRA and seed-based zeroth-order "
        "strategies, simulated on one machine or run across a coordinator and edge clients.",
        epilog="Run `fedft COMMAND --help` for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"fedft {_version()}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress details to stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulate_cmd.add_parser(sub)
    strategies_cmd.add_parser(sub)
    db_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    client_cmd.add_parser(sub)
    status_cmd.add_parser(sub)
    certs_cmd.add_parser(sub)
    token_cmd.add_parser(sub)
    audit_cmd.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fedft command line; returns the process exit code."""
    from fedft.core.errors import UsageError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Library deprecation chatter is not actionable for a user of the CLI.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    try:
        return int(args.handler(args))
    except UsageError as exc:
        print(f"fedft: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        from fedft.cli.extras import missing_extra_hint

        hint = missing_extra_hint(exc, getattr(args, "command", None))
        if hint is None:
            raise
        print(f"fedft: error: {hint}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fedft: interrupted", file=sys.stderr)
        return 130
