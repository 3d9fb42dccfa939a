"""``fedft strategies``: list registered strategies and the options each accepts."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``strategies`` subcommand."""
    p = subparsers.add_parser(
        "strategies",
        help="list strategies, or the options of one",
        description="List the registered strategies (built-ins and plugins from the "
        "`fedft.strategies` entry-point group), or show every option of one strategy; options "
        "are set with `fedft simulate --opt KEY=VALUE`.",
    )
    p.add_argument("name", nargs="?", help="show this strategy's options")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the strategy list or one strategy's options."""
    from rich.console import Console
    from rich.table import Table

    import fedft.strategies  # noqa: F401 - registers built-ins
    from fedft.core.registry import available_strategies, get_strategy

    console = Console()
    if args.name is None:
        table = Table("name", "summary", title="registered strategies")
        for name in available_strategies():
            table.add_row(name, get_strategy(name).summary)
        console.print(table)
        return 0
    spec = get_strategy(args.name)
    table = Table("option", "default", "meaning", title=f"{spec.name}: {spec.summary}")
    for field, (text, default) in spec.config_cls.fields_help().items():
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        table.add_row(field, shown, text)
    console.print(table)
    return 0
