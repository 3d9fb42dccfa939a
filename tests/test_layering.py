"""Import layering between fedft's subpackages, checked statically with ``ast``.

The rules keep the strategy API host-neutral and the wire format swappable:
(a) core imports only core, and only core/serde.py may import the generated protocol code;
(b) strategies import only core, kernels and strategies;
(c) client and server never import each other;
(d) outside core/serde.py, only server, client and simulation (the hosts) import fedft.proto;
(f) runtime (the model runtime and the one assembly point) sits below the hosts: it imports
    neither client, server, simulation nor cli; core, strategies and kernels never import it;
(e) only the Flower adapter (fedft.simulation.flower) imports flwr or ray, so fedft works
    without the optional Flower extra.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Repository folder -> the package setup.py mounts it as.
FOLDERS = {
    "core": "fedft.core",
    "server": "fedft.server",
    "client": "fedft.client",
    "runtime": "fedft.runtime",
    "strategies": "fedft.strategies",
    "kernels": "fedft.kernels",
    "privacy": "fedft.privacy",
    "simulation": "fedft.simulation",
    "cli": "fedft.cli",
}
SERDE = "fedft.core.serde"
PROTO_USERS = ("fedft.server", "fedft.client", "fedft.simulation")
FLOWER_ADAPTER = "fedft.simulation.flower"


def within(name: str, package: str) -> bool:
    """Whether the dotted ``name`` is ``package`` or lies inside it."""
    return name == package or name.startswith(package + ".")


def module_name(path: Path) -> str:
    """The import name of a source file under one of FOLDERS."""
    rel = path.relative_to(REPO)
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:-1]]
    if path.name != "__init__.py":
        parts.append(path.stem)
    return ".".join(parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Yield (line, absolute dotted name) for every import, including importlib calls."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                # Resolve relative imports so that `from ..server import x` cannot slip through.
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                # `from fedft import proto` imports fedft.proto, so name the alias too.
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield node.lineno, node.args[0].value


def _in_any(name: str, *packages: str) -> bool:
    return any(within(name, p) for p in packages)


# (is broken for (module, imported), why); the first broken rule is reported.
RULES: list[tuple[Callable[[str, str], bool], str]] = [
    (
        lambda m, i: (
            within(m, "fedft.core")
            and not (within(i, "fedft.core") or (m == SERDE and within(i, "fedft.proto")))
        ),
        "fedft.core may import only fedft.core, and only fedft.core.serde may import fedft.proto",
    ),
    (
        lambda m, i: (
            within(m, "fedft.strategies")
            and not _in_any(i, "fedft.core", "fedft.kernels", "fedft.strategies")
        ),
        "fedft.strategies may import only fedft.core, fedft.kernels and fedft.strategies",
    ),
    (
        lambda m, i: (
            within(m, "fedft.runtime")
            and _in_any(i, "fedft.client", "fedft.server", "fedft.simulation", "fedft.cli")
        ),
        "fedft.runtime may not import the hosts (client, server, simulation, cli)",
    ),
    (
        lambda m, i: within(m, "fedft.privacy") and within(i, "fedft.runtime"),
        "fedft.privacy may not import fedft.runtime (the runtime wraps with privacy, not back)",
    ),
    (
        lambda m, i: within(m, "fedft.client") and within(i, "fedft.server"),
        "fedft.client may not import fedft.server",
    ),
    (
        lambda m, i: within(m, "fedft.server") and within(i, "fedft.client"),
        "fedft.server may not import fedft.client",
    ),
    (
        lambda m, i: within(i, "fedft.proto") and m != SERDE and not _in_any(m, *PROTO_USERS),
        "fedft.proto may be imported only by fedft.core.serde, server, client and simulation",
    ),
]


def rule_violation(module: str, imported: str) -> str | None:
    """Return why ``module`` may not import ``imported``, or None if it may."""
    if _in_any(imported, "flwr", "ray") and not within(module, FLOWER_ADAPTER):
        top = imported.partition(".")[0]
        return f"only {FLOWER_ADAPTER} may import {top} (the optional extra)"
    if not within(imported, "fedft"):
        return None
    return next((why for broken, why in RULES if broken(module, imported)), None)


def check_source(source: str, module: str, where: str, is_package: bool = False) -> list[str]:
    """Return one 'file:line: message' for each layering violation in ``source``."""
    tree = ast.parse(source, filename=where)
    found = []
    for line, imported in imports(tree, module, is_package):
        reason = rule_violation(module, imported)
        if reason is not None:
            found.append(f"{where}:{line}: {module} imports {imported}: {reason}")
    return found


def source_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def test_repository_respects_layering() -> None:
    files = source_files()
    assert REPO / "core" / "payload.py" in files  # the walk is looking in the right place
    violations = []
    for path in files:
        violations += check_source(
            path.read_text(encoding="utf-8"),
            module_name(path),
            str(path.relative_to(REPO)),
            is_package=path.name == "__init__.py",
        )
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_module_names_follow_setup_mounts() -> None:
    assert module_name(REPO / "core" / "serde.py") == SERDE
    assert module_name(REPO / "core" / "__init__.py") == "fedft.core"
    assert module_name(REPO / "server" / "a" / "b.py") == "fedft.server.a.b"


BAD_SOURCES = [
    # (module, source, expected line, expected message fragment)
    ("fedft.core.payload", "import os\nimport fedft.server.app\n", 2, "only fedft.core"),
    ("fedft.core.payload", "from fedft.proto.v1 import payload_pb2\n", 1, "only fedft.core.serde"),
    ("fedft.core.payload", "from fedft import proto\n", 1, "only fedft.core.serde"),
    ("fedft.core.strategy", "from ..simulation import run\n", 1, "only fedft.core"),
    ("fedft.strategies.lora", "from fedft.simulation import x\n", 1, "fedft.strategies may"),
    ("fedft.strategies.lora", "from fedft.privacy import dp\n", 1, "fedft.strategies may"),
    ("fedft.client.agent", "\n\nfrom fedft.server import api\n", 3, "may not import fedft.server"),
    ("fedft.server.app", "import fedft.client.agent as a\n", 1, "may not import fedft.client"),
    ("fedft.cli.main", "from fedft.proto.v1.payload_pb2 import Payload\n", 1, "fedft.proto may"),
    ("fedft.kernels.ops", "import importlib\nimportlib.import_module('fedft.proto')\n", 2, ""),
    ("fedft.privacy.dp", "def f():\n    from fedft.proto import v1\n", 2, "fedft.proto may"),
    ("fedft.simulation.engine", "from flwr.app import Message\n", 1, "only fedft.simulation.f"),
    ("fedft.simulation.console", "def f():\n    import ray\n", 2, "may import ray"),
    ("fedft.server.app", "import flwr\n", 1, "(the optional extra)"),
    ("fedft.runtime.trainer", "from fedft.client import daemon\n", 1, "may not import the hosts"),
    ("fedft.runtime.assembly", "import fedft.simulation.spec\n", 1, "may not import the hosts"),
    ("fedft.privacy.local", "from fedft.runtime import trainer\n", 1, "may not import fedft.r"),
    ("fedft.strategies.x", "from fedft.runtime import trainer\n", 1, "fedft.strategies may"),
    ("fedft.simulation.flowerpot", "import flwr\n", 1, "only fedft.simulation.flower "),
]


def test_checker_flags_synthetic_violations() -> None:
    for module, source, line, fragment in BAD_SOURCES:
        found = check_source(source, module, "fake.py")
        assert len(found) == 1, (module, source, found)
        assert found[0].startswith(f"fake.py:{line}: "), found
        assert fragment in found[0], found


def test_checker_allows_legal_imports() -> None:
    good = [
        ("fedft.core.serde", "from fedft.proto.v1 import payload_pb2\nimport torch\n"),
        ("fedft.core.strategy", "from fedft.core.payload import Payload\nfrom . import errors\n"),
        ("fedft.strategies.zo", "from fedft.kernels import zo\nfrom fedft.core import rng\n"),
        ("fedft.server.grpc", "from fedft.proto.v1 import payload_pb2\nimport fedft.core\n"),
        ("fedft.client.grpc", "from fedft.proto.v1 import payload_pb2\n"),
        ("fedft.simulation.run", "import fedft.server\nimport fedft.client\n"),
        ("fedft.cli.main", "from fedft.server import app\nfrom fedft.client import agent\n"),
        ("fedft.simulation.flower.codec", "from flwr.app import Array\nimport ray\n"),
        ("fedft.simulation.flower", "import flwr.simulation\n"),
        ("fedft.simulation.engine", "import flwrx\nimport rayon\n"),
    ]
    for module, source in good:
        assert check_source(source, module, "fake.py") == [], module
    # A relative import in a package __init__ resolves against the package itself.
    assert check_source("from .payload import Payload\n", "fedft.core", "x", is_package=True) == []
