"""--engine grpc --secagg: fedft serve --secagg and fedft client processes, the plain model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fedft.core.serde import payload_from_bytes
from fedft.privacy.secagg.task import MASKED
from fedft.server.state.factory import open_state
from fedft.simulation.grpc_engine import GrpcEngine
from fedft.simulation.spec import SimulationSpec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def spec(out: Path, strategy: str, *, secagg: bool) -> SimulationSpec:
    return SimulationSpec(
        strategy=strategy,
        strategy_options={"local_steps": 2, "seeds": 64} if strategy == "fedkseed" else {},
        model="tiny",
        clients=3,
        rounds=2,
        seed=3,
        out=out,
        engine="grpc",
        rouge_examples=0,
        eval_examples=8,
        secagg=secagg,
    )


@pytest.mark.parametrize("strategy", ["fedkseed", "fedavg_lora"])
def test_the_secure_run_gives_the_plain_model(tmp_path: Path, strategy: str) -> None:
    plain = GrpcEngine(spec(tmp_path / "plain", strategy, secagg=False)).run()
    secure = GrpcEngine(spec(tmp_path / "secure", strategy, secagg=True)).run()
    for a, b in zip(plain.rounds, secure.rounds, strict=True):
        assert b.metrics["secagg_survivors"] == 3
        assert "secagg_failed" not in b.metrics
        # Round 1 agrees to the encoding; round 2 trains from models a few ulps apart.
        assert b.eval_loss == pytest.approx(a.eval_loss, abs=1e-4)
    state = open_state(f"sqlite:///{tmp_path / 'secure' / 'grpc' / 'coordinator.db'}", create=False)
    try:
        for number in (1, 2):
            for update in state.updates_for_round(number):
                payload = payload_from_bytes(state.get_blob(update.payload_sha))
                assert set(payload.tensors) == {MASKED}  # no update was ever stored in clear
    finally:
        state.close()


def test_distributed_dp_over_grpc_records_skellam_and_audits_in_rdp(tmp_path: Path) -> None:
    out = tmp_path / "distributed"
    settings = dataclasses.replace(
        spec(out, "fedavg_lora", secagg=True),
        rounds=1,
        dp_noise=1.0,
        dp_clip=0.05,
        dp_distributed=True,
    )
    report = GrpcEngine(settings).run()
    (only,) = report.rounds
    assert "secagg_failed" not in only.metrics
    assert only.metrics["secagg_survivors"] == 3
    lines = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert [(e["round"], e["mechanism"], e["aggregation"]) for e in lines] == [
        (1, "skellam", "secagg")
    ]
    # Three devices, noise calibrated for max(2, ceil(0.7 * 3)) = 3 of them: z as asked.
    assert lines[0]["participants"] == 3
    assert lines[0]["noise_multiplier"] == pytest.approx(1.0)
    assert lines[0]["l2_sensitivity"] > 0
    assert lines[0]["l1_sensitivity"] > 0
    # The coordinator's database keeps the sensitivities the Skellam accounting needs.
    state = open_state(f"sqlite:///{out / 'grpc' / 'coordinator.db'}", create=False)
    try:
        (stored,) = state.ledger()
    finally:
        state.close()
    assert stored.mechanism == "skellam"
    assert stored.l2_sensitivity == lines[0]["l2_sensitivity"]
    assert stored.l1_sensitivity == lines[0]["l1_sensitivity"]
    audit = json.loads((out / "audit.json").read_text())
    assert audit["accountant"] == "rdp"
    assert audit["epsilon_pld"] is None
    assert 0 < audit["epsilon_rdp"] < float("inf")
