"""The seed-based strategies run in the in-process simulation and lower the eval loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec

# Short runs that still move a tiny model measurably; the 8x5 runs are in results.md.
CASES: dict[str, dict[str, Any]] = {
    "fedkseed": {"local_steps": 40, "lr": 5e-5, "seeds": 256},
    "fedkseed_pro": {"local_steps": 40, "lr": 5e-5, "seeds": 256},
    "ferret": {"local_steps": 3, "seeds": 32},
}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(CASES))
def test_seed_strategy_lowers_eval_loss(
    strategy: str, tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDFT_CACHE", str(tiny_cache))
    spec = SimulationSpec(
        model="tiny",
        clients=3,
        rounds=2,
        seed=0,
        out=tmp_path,
        strategy=strategy,
        strategy_options=CASES[strategy],
        rouge_examples=0,
    )
    report = InProcessEngine(spec).run()
    losses = [report.initial["eval_loss"]] + [r.eval_loss for r in report.rounds]
    assert losses[-1] < losses[0]
    for record in report.rounds:
        assert record.metrics["accepted"] == 3
        # Seed updates: kilobytes, not megabytes, in both directions.
        assert 0 < record.bytes_up < 40_000 * 3
        assert record.bytes_down < 40_000 * 3
