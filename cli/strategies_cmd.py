"""``fedft strategies``: list registered strategies and the options each accepts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedft.core.config import StrategyConfig


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
    p.add_argument(
        "--preset",
        metavar="NAME",
        help="show a named preset (e.g. paper): its values, where they differ from the "
        "defaults, and what it cannot match; apply it with --opt preset=NAME",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the strategy list or one strategy's options."""
    from rich.console import Console
    from rich.table import Table

    from fedft.core.registry import available_strategies, get_strategy

    console = Console()
    if args.name is None:
        table = Table("name", "summary", title="registered strategies")
        for name in available_strategies():
            table.add_row(name, get_strategy(name).summary)
        console.print(table)
        return 0
    spec = get_strategy(args.name)
    if args.preset is not None:
        return _show_preset(console, spec.name, spec.config_cls, args.preset)
    table = Table("option", "default", "meaning", title=f"{spec.name}: {spec.summary}")
    for field, (text, default) in spec.config_cls.fields_help().items():
        shown = ",".join(default) if isinstance(default, tuple) else str(default)
        table.add_row(field, shown, text)
    console.print(table)
    presets = ", ".join(sorted(spec.config_cls.presets()))
    if presets:
        console.print(f"presets: {presets} (fedft strategies {spec.name} --preset NAME)")
    return 0


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _show_preset(console: Any, name: str, config_cls: type[StrategyConfig], preset: str) -> int:
    """Print a preset: every value, marked where it differs from the default, and its gaps."""
    from rich.table import Table

    chosen = config_cls.preset(preset)
    changed = {key for key, _, _ in config_cls.preset_diff(preset)}
    defaults = {k: d for k, (_, d) in config_cls.fields_help().items()}
    table = Table("option", "preset", "default", "", title=f"{name} --preset {preset}")
    for key, value in chosen.values.items():
        mark = "changed" if key in changed else "same"
        table.add_row(key, _shown(value), _shown(defaults[key]), mark)
    console.print(table)
    console.print(f"source: {chosen.source}")
    console.print(f"differs from the defaults in: {', '.join(sorted(changed)) or 'nothing'}")
    if chosen.unmatched:
        console.print("cannot be matched:")
        for note in chosen.unmatched:
            console.print(f"  - {note}")
    console.print(f"apply with: --opt preset={preset} (later --opt KEY=VALUE override it)")
    return 0
