"""FedftStrategy under Flower's own ``Strategy.start``, over a Grid calling the ClientApp directly.

``DirectGrid`` is Flower's Grid interface with the simplest transport: each message goes to
the real ClientApp in this process. The tests therefore need no Ray, and they can make a node
fail or stay silent.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra is not installed")

import torch
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedft.core.errors import UsageError
from fedft.simulation.engine import InProcessEngine, build_strategy
from fedft.simulation.flower.client_app import make_client_app
from fedft.simulation.flower.server_app import FlowerServer
from fedft.simulation.flower.strategy import FedftStrategy, NoNodesError
from fedft.simulation.spec import SimulationSpec


class DirectGrid(Grid):  # type: ignore[misc]
    """Delivers messages straight to a ClientApp, with nodes that misbehave on purpose.

    ``silent`` nodes never answer a training message; ``failing`` nodes answer it with an error.
    """

    def __init__(
        self,
        app: ClientApp,
        clients: int,
        *,
        silent: frozenset[int] = frozenset(),
        failing: frozenset[int] = frozenset(),
    ) -> None:
        self.app = app
        self.contexts = {
            100 + k: Context(
                run_id=1,
                node_id=100 + k,
                node_config={"partition-id": k, "num-partitions": clients},
                state=RecordDict(),
                run_config={},
            )
            for k in range(clients)
        }
        self.silent, self.failing = silent, failing
        self.sent: list[str] = []

    def set_run(self, run: object) -> None:
        raise NotImplementedError

    @property
    def run(self) -> object:
        raise NotImplementedError

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            node, kind = msg.metadata.dst_node_id, msg.metadata.message_type
            self.sent.append(kind)
            training = kind.startswith("train")
            if training and node in self.silent:
                continue
            if training and node in self.failing:
                replies.append(Message(Error(code=0, reason="out of memory"), reply_to=msg))
                continue
            replies.append(self.app(msg, self.contexts[node]))
        return replies


@pytest.fixture(autouse=True)
def task_identity() -> Iterator[None]:
    """Flower's Message reads the process's task identity, which a simulation would set."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def make_spec(out: Path, **changes: object) -> SimulationSpec:
    values: dict[str, object] = {
        "model": "tiny", "clients": 3, "rounds": 2, "seed": 0, "out": out,
        "rouge_examples": 0, "eval_examples": 8, "engine": "flower",
        "strategy_options": {"local_steps": 2},
    }  # fmt: skip
    values.update(changes)
    return SimulationSpec(**values)  # type: ignore[arg-type]


@pytest.mark.slow
def test_strategy_start_reaches_the_in_process_model(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "flower")
    server = FlowerServer(spec)
    grid = DirectGrid(make_client_app(spec), spec.clients)
    server.main(grid, grid.contexts[100])
    report = server.finish()
    local = InProcessEngine(make_spec(tmp_path / "local", engine="inprocess"))
    local_report = local.run()

    mine, theirs = server.server_half.global_state(), local.server_half.global_state()
    for name, tensor in theirs.tensors.items():
        torch.testing.assert_close(mine.tensors[name], tensor, rtol=1e-5, atol=1e-6)
    assert [r.bytes_up for r in report.rounds] == [r.bytes_up for r in local_report.rounds]
    assert [r.metrics for r in report.rounds] == [r.metrics for r in local_report.rounds]
    # Nodes described themselves once, then one training message per client and round.
    assert grid.sent.count("query.fedft_describe") == 3
    assert grid.sent.count("train.fedft") == 6
    assert sorted(server.strategy.clients) == ["client-0", "client-1", "client-2"]


@pytest.mark.slow
def test_silent_and_failing_nodes_become_failures(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "flower", rounds=1)
    server = FlowerServer(spec)
    grid = DirectGrid(
        make_client_app(spec), spec.clients, silent=frozenset({101}), failing=frozenset({102})
    )
    server.main(grid, grid.contexts[100])
    (record,) = server.report.rounds
    assert record.participants == 3
    assert record.metrics["accepted"] == 1
    assert record.metrics["failures"] == 2
    assert record.bytes_up > 0  # the one update that came back was counted
    assert record.bytes_up * 3 < record.bytes_down * 2  # ... and only that one


def test_no_nodes_is_an_error_after_the_deadline(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    strategy, config = build_strategy(spec)
    server_half = strategy.server_cls(config, seed=spec.seed)
    hosted = FedftStrategy(server_half, min_nodes=2, node_wait_s=0.3)
    grid = DirectGrid(make_client_app(spec), 0)
    with pytest.raises(NoNodesError, match="no Flower node connected within 0 s"):
        hosted.discover(grid)


@pytest.mark.slow
def test_client_state_persists_in_flower_context_between_rounds(tmp_path: Path) -> None:
    """Seed-strategy clients keep their model versions in Context.state; losing it costs resyncs."""
    spec = make_spec(tmp_path / "flower", rounds=3, **_fedkseed())
    server = FlowerServer(spec)
    grid = DirectGrid(make_client_app(spec), spec.clients)
    server.main(grid, grid.contexts[100])
    assert [r.metrics["resyncs"] for r in server.report.rounds] == [0, 0, 0]
    assert [r.metrics["accepted"] for r in server.report.rounds] == [3, 3, 3]
    for context in grid.contexts.values():
        held = context.state.array_records["fedft.local.tensors"]
        assert len(held) >= 1  # the versions this client holds, stored by the host

    # The same run with the state wiped before round 3 (round 2's tasks already build on a
    # version from round 1): every client has to ask for a resync.
    wiped = FlowerServer(make_spec(tmp_path / "wiped", rounds=3, **_fedkseed()))
    forgetful = DirectGrid(make_client_app(wiped.spec), 3)
    original = forgetful.send_and_receive

    def send_forgetting(
        messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        batch = list(messages)
        if batch and batch[0].metadata.group_id == "3":
            for context in forgetful.contexts.values():
                context.state = RecordDict()
        return list(original(batch, timeout=timeout))

    forgetful.send_and_receive = send_forgetting  # type: ignore[method-assign]
    wiped.main(forgetful, forgetful.contexts[100])
    assert [r.metrics["resyncs"] for r in wiped.report.rounds] == [0, 0, 3]


def _fedkseed() -> dict[str, object]:
    return {"strategy": "fedkseed", "strategy_options": {"local_steps": 4, "seeds": 64}}


def test_a_node_without_identity_is_told_what_is_missing(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    grid = DirectGrid(make_client_app(spec), 1)
    grid.contexts[100].node_config = {}
    with pytest.raises(UsageError, match=r"neither partition-id .* nor data-path"):
        list(grid.send_and_receive([Message(RecordDict(), 100, "query.fedft_describe")]))


def test_a_supernode_can_bring_its_own_data_file(tmp_path: Path) -> None:
    data = tmp_path / "site-a.jsonl"
    rows = [{"prompt": f"question {i}?", "response": f"answer {i}."} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = make_spec(tmp_path)
    grid = DirectGrid(make_client_app(spec), 1)
    grid.contexts[100].node_config = {"data-path": str(data), "client-id": "site-a"}
    (reply,) = grid.send_and_receive([Message(RecordDict(), 100, "query.fedft_describe")])
    record = reply.content.config_records["fedft.client"]
    assert (record["client_id"], record["num_examples"]) == ("site-a", 5)
