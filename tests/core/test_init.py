"""The fedft.core facade: every name resolves, lazily, and fedavg_lora needs nothing else."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import fedft.core

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", fedft.core.__all__)
def test_every_facade_name_is_its_module_s_object(name: str) -> None:
    value = getattr(fedft.core, name)
    home = fedft.core._HOME[name]
    module = sys.modules[f"fedft.core.{home}"]
    assert value is getattr(module, name)
    assert name in dir(fedft.core)


def test_all_lists_every_facade_name() -> None:
    assert sorted(fedft.core.__all__) == sorted(fedft.core._HOME)


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'serde_magic'"):
        _ = fedft.core.serde_magic  # type: ignore[attr-defined]


def test_importing_the_facade_does_not_import_torch() -> None:
    code = "import sys, fedft.core; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_fedavg_lora_imports_from_the_facade_only() -> None:
    """The example built-in: no fedft.core.<module> import, only ``from fedft.core import``."""
    for path in sorted((ROOT / "strategies" / "fedavg_lora").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("fedft.core."), f"{path.name}: {node.module}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("fedft.core."), f"{path.name}: {alias.name}"
