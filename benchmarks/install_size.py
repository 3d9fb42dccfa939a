"""Disk size of what ``pip install fedft`` brings beyond torch, lean client vs ``fedft[server]``.

Reads the installed distributions' metadata in this environment (nothing is downloaded): the
dependency closure of fedft's requirements, with and without the ``server`` extra, minus
torch's own closure (GPU users bring their own torch build), each file's size summed from the
distribution's RECORD. Prints a markdown table and the largest packages of each install.

Example::

    .venv/bin/python benchmarks/install_size.py
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

MB = 1e6


def closure(requirements: list[str], extras: frozenset[str]) -> set[str]:
    """Canonical names of the installed distributions ``requirements`` pull in, transitively."""
    names: set[str] = set()
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        # A requirement's marker may name one of the extras its parent was installed with.
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": e}) for e in (active or {""})
        ):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in visited:
            continue
        visited.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional dependency not installed here
        names.add(name)
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return names


def size_of(name: str) -> int:
    """Bytes on disk of one installed distribution's files."""
    files = distribution(name).files or []
    total = 0
    for f in files:
        path = Path(str(f.locate()))
        if path.is_file():
            total += path.stat().st_size
    return total


def fedft_closure(extras: frozenset[str]) -> set[str]:
    """The dependency closure of fedft with ``extras`` (fedft itself left out)."""
    requires = distribution("fedft").requires or []
    return closure(requires, extras) - {"fedft"}


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=8, help="largest packages listed per install")
    args = parser.parse_args()
    torch_side = closure(["torch"], frozenset())
    installs = {
        "pip install fedft (lean client)": fedft_closure(frozenset()),
        "pip install 'fedft[server]'": fedft_closure(frozenset({"server"})),
    }
    sizes = {name: size_of(name) for deps in installs.values() for name in deps}
    print("| install | packages beyond torch | size beyond torch (MB) |")
    print("|---|---:|---:|")
    for label, deps in installs.items():
        beyond = deps - torch_side
        print(f"| {label} | {len(beyond)} | {sum(sizes[n] for n in beyond) / MB:,.0f} |")
    lean, full = installs.values()
    only_server = full - lean - torch_side
    print(f"\nthe server extra adds: {sum(sizes[n] for n in only_server) / MB:,.0f} MB")
    for label, deps in installs.items():
        beyond = sorted(deps - torch_side, key=lambda n: -sizes[n])[: args.top]
        listed = ", ".join(f"{n} {sizes[n] / MB:.0f}" for n in beyond)
        print(f"largest in {label} (MB): {listed}")


if __name__ == "__main__":
    main()
