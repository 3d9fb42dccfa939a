"""What reproduces a run: the command, fedft's version and commit, libraries, flags, hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from fedft.runtime.data import DATASET_PRESETS, Example
from fedft.simulation.data_split import split_data
from fedft.simulation.report import Report
from fedft.simulation.spec import SimulationSpec

LIBRARIES = ("torch", "transformers", "peft", "triton", "flwr")


def provenance(spec: SimulationSpec, model_dir: Path) -> dict[str, Any]:
    """The ``provenance`` block of ``report.json``."""
    data = split_data(spec)  # deterministic: the very examples the run used, for their hash
    examples = [e for c in sorted(data.clients) for e in data.clients[c]] + data.eval_set
    return {
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
        "fedft": _version("fedft"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES if _version(name)},
        # Every flag but --out: where a report lands does not change what it says.
        "spec": _json_ready({k: v for k, v in dataclasses.asdict(spec).items() if k != "out"}),
        "model_sha256": folder_hash(model_dir),
        "data_sha256": data_hash(examples),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout fedft runs from, with ``+dirty`` for local changes; or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            check=False,
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False, cwd=here, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def folder_hash(folder: Path) -> str:
    """SHA-256 over a checkpoint folder's config and weight files (names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in folder.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".model")
    )
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def data_hash(examples: list[Example]) -> str:
    """SHA-256 of the examples a run used, in order (the split itself is seeded by the spec)."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps(dataclasses.asdict(example), sort_keys=True).encode() + b"\n")
    return digest.hexdigest()


def _json_ready(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def model_facts(report: Report, spec: SimulationSpec) -> dict[str, Any]:
    """What the model card says about the run (the command that does it again included)."""
    dp = spec.dp_config()
    local = spec.local_dp_config()
    return {
        "strategy": spec.strategy,
        "engine": spec.engine,
        "rounds": spec.rounds,
        "clients": spec.clients,
        "dataset": spec.dataset if spec.dataset in DATASET_PRESETS else Path(spec.dataset).name,
        "partition": spec.partition,
        "seed": spec.seed,
        "quantization": spec.quant,
        "strategy options": report.config,
        "client-level DP": (
            {"noise_multiplier": dp.noise_multiplier, "clip": dp.clip, "sampling": dp.sampling_rate}
            if dp is not None
            else None
        ),
        "privacy audit": "audit.json beside report.json" if dp is not None else None,
        "client-side DP": (
            {
                "clip": local.clip,
                "noise_multiplier": local.noise_multiplier,
                "worst-off epsilon": report.final.get("local_dp_epsilon"),
            }
            if local is not None
            else None
        ),
        "final eval loss": report.final.get("eval_loss"),
        "command": " ".join(report.provenance.get("command", [])),
    }
