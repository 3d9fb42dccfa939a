"""--engine grpc --mode async: FedBuff through the deployable stack, replayed from its database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedft.core.async_options import AsyncSettings
from fedft.core.serde import payload_from_bytes
from fedft.core.strategy import Result
from fedft.runtime.server_assembly import assemble_server
from fedft.server.round_view import checkpoint_at
from fedft.server.state.factory import open_state
from fedft.simulation.grpc_engine import GrpcEngine
from fedft.simulation.spec import SimulationSpec
from fedft.strategies.buffered import BufferedAggregator, async_from_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SETTINGS = AsyncSettings(buffer=2, max_staleness=4)


def spec(out: Path) -> SimulationSpec:
    return SimulationSpec(
        strategy="fedkseed",
        strategy_options={"local_steps": 2, "seeds": 64},
        model="tiny",
        clients=3,
        rounds=3,
        seed=3,
        out=out,
        engine="grpc",
        rouge_examples=0,
        eval_examples=8,
        device_mix="fast:2,slow:1",
        mode="async",
        buffer=SETTINGS.buffer,
        max_staleness=SETTINGS.max_staleness,
    )


def test_an_async_run_end_to_end_replays_from_its_database(tmp_path: Path) -> None:
    run = spec(tmp_path)
    report = GrpcEngine(run).run()
    assert report.mode == "async"
    assert [entry.round for entry in report.rounds] == [1, 2, 3]
    for entry in report.rounds:
        assert entry.metrics["accepted"] == SETTINGS.buffer  # one version per K updates
        assert entry.participants == SETTINGS.buffer
        assert all(
            record["staleness"] >= 0 for record in entry.clients.values() if record["seconds"]
        )
    assert json.loads((tmp_path / "report.json").read_text())["mode"] == "async"

    # Replay every version from the stored updates, tickets and rounds alone: the documented
    # rule (sum n_i d(s_i) v_i / sum n_i, d(s) = 1/sqrt(1+s)) gives the coordinator's versions.
    state = open_state(f"sqlite:///{tmp_path / 'grpc' / 'coordinator.db'}", create=False)
    try:
        server_half = assemble_server(run.run_spec()).server_half
        server_half.load_state_dict(checkpoint_at(state, 0))
        aggregator = BufferedAggregator(server_half, SETTINGS)
        tickets = []
        for number in (1, 2, 3):
            aggregator.versions = number - 1
            for update in state.updates_for_round(number):
                task = state.get_task(update.task_id)
                assert task is not None
                assert task.ticket is not None
                assert task.round <= number
                tickets.append(task.ticket)
                aggregator.outstanding[task.ticket] = task.round - 1
                payload = payload_from_bytes(state.get_blob(update.payload_sha))
                assert aggregator.submit(task.ticket, Result(update.client_id, payload)) is None
            stored = async_from_state(payload_from_bytes(state.get_checkpoint(number)))
            assert stored is not None
            assert stored[0] == SETTINGS
            aggregator.counter = stored[1] - 1  # the number the coordinator applied it under
            aggregator.apply()
            want = server_half.global_state().tensors
            server_check = assemble_server(run.run_spec()).server_half
            server_check.load_state_dict(checkpoint_at(state, number))
            got = server_check.global_state().tensors
            for name, tensor in want.items():
                assert torch.equal(got[name], tensor), (number, name)
        assert len(set(tickets)) == len(tickets) == 3 * SETTINGS.buffer
    finally:
        state.close()
