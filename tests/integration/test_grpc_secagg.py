"""--engine grpc --secagg: fedft serve --secagg and fedft client processes, the plain model."""

from __future__ import annotations

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
