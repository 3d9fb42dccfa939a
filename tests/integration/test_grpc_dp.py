"""DP through the real stack: the coordinator stores the ledger in its database; audit reads it."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting as dpa
import pytest

from fedft.privacy.ledger import read_jsonl
from fedft.server.state.factory import open_state
from fedft.simulation.grpc_engine import GrpcEngine
from fedft.simulation.spec import SimulationSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_grpc_run_with_server_and_client_dp(tmp_path: Path) -> None:
    out = tmp_path / "grpc-dp"
    spec = SimulationSpec(
        model="tiny",
        clients=2,
        rounds=2,
        seed=0,
        out=out,
        engine="grpc",
        rouge_examples=0,
        eval_examples=4,
        strategy_options={"local_steps": 2, "batch_size": 2},
        dp_noise=1.0,
        dp_clip=0.05,
        canaries=10,
        local_dp_clip=0.1,
        local_dp_noise=0.5,
    )
    report = GrpcEngine(spec).run()
    state = open_state(f"sqlite:///{out / 'grpc' / 'coordinator.db'}")
    try:
        stored = state.ledger()
    finally:
        state.close()
    assert [(e.round, e.noise_multiplier, e.participants) for e in stored] == [
        (1, 1.0, 12),
        (2, 1.0, 12),
    ]
    assert [e.round for e in read_jsonl(out / "ledger.jsonl")] == [1, 2]
    audit = json.loads((out / "audit.json").read_text())
    assert audit["epsilon_pld"] == pytest.approx(dpa.get_epsilon_gaussian(2**-0.5, 1e-5), rel=1e-3)
    assert audit["epsilon_empirical"]["canaries_seen"] == 10
    assert (out / "audit.png").is_file()
    # Each daemon kept its own client-side ledger in its state folder: one release per round.
    folders = sorted((out / "grpc" / "clients").iterdir())
    assert len(folders) == 2
    for folder in folders:
        mine = read_jsonl(folder / "ledger.jsonl")
        assert [(e.round, e.noise_multiplier, e.clip_norm) for e in mine] == [
            (1, 0.5, 0.1),
            (2, 0.5, 0.1),
        ]
    assert report.final["local_dp_releases"] == 2
    local = dpa.get_epsilon_gaussian(0.5 / 2 / 2**0.5, 1e-5)
    assert report.final["local_dp_epsilon"] == pytest.approx(local, rel=1e-3)
