"""Regenerate (or, with --check, verify) the checked-in protobuf and gRPC code of fedft.

Usage, from anywhere, with the development environment's Python:

    .venv/bin/python scripts/gen_protos.py           # rewrite protos/fedft/proto/v1/*_pb2*
    .venv/bin/python scripts/gen_protos.py --check   # exit 1 with a diff if they are stale
    .venv/bin/python scripts/gen_protos.py --out DIR # write the tree under DIR instead

This is the only way the generated files may change: the generator versions are pinned in
pyproject.toml's dev extra and checked here, so that CI's --check compares like with like.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.metadata
import importlib.resources
import re
import shutil
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
# Every .proto of the wire protocol; the import path under PROTO_ROOT fixes the Python package.
PROTO_PACKAGE = Path("fedft", "proto", "v1")
GENERATED = re.compile(r".+_pb2(_grpc)?\.pyi?$")
# Distributions whose output lands in the checked-in files, with their plugin executables.
GENERATORS = ("grpcio-tools", "mypy-protobuf")
PLUGINS = {"protoc-gen-mypy": "mypy", "protoc-gen-mypy_grpc": "mypy_grpc"}


def pinned_versions() -> dict[str, str]:
    """Return the exact versions pyproject.toml's dev extra pins for the generators."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for requirement in project["optional-dependencies"]["dev"]:
        name, sep, version = requirement.partition("==")
        if sep and name.strip() in GENERATORS:
            pins[name.strip()] = version.strip()
    missing = set(GENERATORS) - pins.keys()
    if missing:
        sys.exit(f"gen_protos: pyproject.toml's dev extra must pin {sorted(missing)} with ==")
    return pins


def check_versions() -> None:
    """Exit with a clear message unless the installed generators are exactly the pinned ones."""
    problems = []
    for name, wanted in pinned_versions().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != wanted:
            problems.append(f"{name}=={wanted} is pinned but {installed} is found")
    if problems:
        sys.exit(
            "gen_protos: generator versions do not match pyproject.toml, so the output would "
            "differ from CI's:\n  " + "\n  ".join(problems) + "\n"
            "Install the dev extra: pip install -e '.[dev]'"
        )


def find_plugin(name: str) -> Path:
    """Locate a protoc plugin next to this interpreter (a venv's bin/) or else on PATH."""
    # No resolve(): a venv's python is a symlink into the base install, whose bin/ lacks plugins.
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        sys.exit(f"gen_protos: cannot find the protoc plugin {name} (install mypy-protobuf)")
    return Path(found)


def generate(out: Path) -> None:
    """Run protoc over every .proto of the package, writing the generated tree under ``out``."""
    # Imported late (and untyped: grpc_tools ships no stubs) so that check_versions speaks first.
    protoc = importlib.import_module("grpc_tools.protoc")
    protos = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        sys.exit(f"gen_protos: no .proto files under {PROTO_ROOT / PROTO_PACKAGE}")
    # grpc_tools ships the well-known types (google/protobuf/*.proto) that later files may import.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}"]
    args += [f"--plugin={name}={find_plugin(name)}" for name in PLUGINS]
    args += [f"--python_out={out}", f"--grpc_python_out={out}"]
    args += [f"--{flag}_out={out}" for flag in PLUGINS.values()]
    # Paths relative to the include root give the module names fedft.proto.v1.<name>_pb2.
    args += [p.relative_to(PROTO_ROOT).as_posix() for p in protos]
    status = protoc.main(args)
    if status != 0:
        sys.exit(f"gen_protos: protoc failed with exit status {status}")


def generated_files(root: Path) -> dict[str, Path]:
    """Map each generated file's name to its path in ``root``'s package folder."""
    folder = root / PROTO_PACKAGE
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if GENERATED.fullmatch(p.name)}


def diff(fresh: Path, current: Path) -> str:
    """Return a unified diff from the checked-in files to freshly generated ones ('' if equal)."""
    new, old = generated_files(fresh), generated_files(current)
    chunks: list[str] = []
    for name in sorted(new.keys() | old.keys()):
        before = old[name].read_text().splitlines(keepends=True) if name in old else []
        after = new[name].read_text().splitlines(keepends=True) if name in new else []
        path = (PROTO_PACKAGE / name).as_posix()
        chunks += difflib.unified_diff(before, after, f"checked-in/{path}", f"generated/{path}")
    return "".join(chunks)


def install(fresh: Path, out: Path) -> list[str]:
    """Copy freshly generated files into ``out``, removing stale ones; return what changed."""
    new, old = generated_files(fresh), generated_files(out)
    target = out / PROTO_PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, path in new.items():
        content = path.read_bytes()
        if name not in old or old[name].read_bytes() != content:
            (target / name).write_bytes(content)
            changed.append(name)
    # A deleted .proto must not leave its generated module behind to be imported by mistake.
    for name in old.keys() - new.keys():
        old[name].unlink()
        changed.append(name)
    return sorted(changed)


def main(argv: list[str] | None = None) -> int:
    """Regenerate or check the generated code; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail with a diff if stale")
    mode.add_argument("--out", type=Path, help=f"output root (default: {PROTO_ROOT})")
    args = parser.parse_args(argv)

    check_versions()
    with tempfile.TemporaryDirectory(prefix="fedft-protos-") as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            delta = diff(fresh, PROTO_ROOT)
            if delta:
                sys.stdout.write(delta)
                print(
                    "gen_protos: generated code is out of date; run scripts/gen_protos.py",
                    file=sys.stderr,
                )
                return 1
            print("gen_protos: generated code is up to date")
            return 0
        out = (args.out or PROTO_ROOT).resolve()
        changed = install(fresh, out)
        print(f"gen_protos: {len(changed)} file(s) changed under {out / PROTO_PACKAGE}")
        for name in changed:
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
