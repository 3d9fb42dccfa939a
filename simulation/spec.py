"""Everything a simulation run needs to know, validated before any model is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedft.core.errors import UsageError
from fedft.simulation.partition import parse_partition

ENGINES = ("inprocess", "grpc", "flower")


@dataclass(frozen=True)
class SimulationSpec:
    """Inputs of one simulation; the same spec and seed give the same report."""

    strategy: str = "fedavg_lora"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    model: str = "smollm2"
    dataset: str = "chatterbot"
    clients: int = 4
    rounds: int = 2
    partition: str = "category"
    seed: int = 0
    out: Path = Path("runs/latest")
    engine: str = "inprocess"
    max_length: int = 128
    test_fraction: float = 0.1
    eval_examples: int = 64
    rouge_examples: int = 8
    max_new_tokens: int = 24
    # --engine flower only: Ray resources per virtual client and an optional cluster address.
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    ray_address: str = ""

    def __post_init__(self) -> None:
        problems = [
            (self.clients >= 1, f"--clients must be >= 1, got {self.clients}"),
            (self.rounds >= 1, f"--rounds must be >= 1, got {self.rounds}"),
            (0 <= self.seed < 2**63, f"--seed must be in [0, 2^63), got {self.seed}"),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (self.max_length >= 16, f"--max-length must be >= 16, got {self.max_length}"),
            (0.0 < self.test_fraction < 1.0, "--test-fraction must be in (0, 1)"),
            (self.eval_examples >= 1, "--eval-examples must be >= 1"),
            (self.rouge_examples >= 0, "--rouge-examples must be >= 0"),
            (self.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
            (self.cpus_per_client > 0, "--cpus-per-client must be > 0"),
            (self.gpus_per_client >= 0, "--gpus-per-client must be >= 0"),
        ]
        for ok, message in problems:
            if not ok:
                raise UsageError(message)
        parse_partition(self.partition)
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out} exists and is not a folder")
