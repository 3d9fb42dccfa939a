"""The client half inside Flower: a ClientApp that runs any fedft strategy's client half.

Each Flower node is one fedft client. The node learns who it is from its node config: in a
simulation Flower gives it ``partition-id`` and ``num-partitions`` and the node takes that share
of the spec's data split (the same split every engine makes); a real SuperNode can instead be
started with ``--node-config "data-path='/data/mine.jsonl' client-id='site-a'"``.

The model and the trainers are cached per process: a Ray actor (or a long-lived SuperNode's app
process) keeps them across messages, exactly like the in-process engine's shared model. What a
strategy keeps between rounds (``local_state``) lives in Flower's per-node ``Context.state``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedft.core.device import TASK_SECONDS
from fedft.core.errors import UsageError
from fedft.core.strategy import ClientStrategy
from fedft.runtime.data import Example, load_dataset
from fedft.runtime.models import ModelBundle, load_model
from fedft.runtime.trainer import LocalTrainer
from fedft.simulation.data_split import client_ids, split_data
from fedft.simulation.engine import build_strategy
from fedft.simulation.flower.codec import payload_to_records, records_to_payload, store_payload
from fedft.simulation.flower.run_config import spec_from_run_config, spec_to_run_config
from fedft.simulation.spec import SimulationSpec

TRAIN_ACTION = "fedft"  # message type "train.fedft"
DESCRIBE_ACTION = "fedft_describe"  # message type "query.fedft_describe"
DESCRIBE_RECORD = "fedft.client"
LOCAL_STATE_PREFIX = "fedft.local."


@dataclass
class _Runtime:
    """What one process holds for one run: the model, the client half, each client's trainer."""

    spec: SimulationSpec
    client_half: ClientStrategy[Any]
    bundle: ModelBundle
    trainers: dict[str, LocalTrainer] = field(default_factory=dict)
    shares: dict[str, list[Example]] | None = None

    def trainer(self, client_id: str, examples: list[Example]) -> LocalTrainer:
        if client_id not in self.trainers:
            trainer = LocalTrainer(self.bundle, examples, max_length=self.spec.max_length)
            self.client_half.prepare(trainer)
            self.trainers[client_id] = trainer
        return self.trainers[client_id]


_RUNTIMES: dict[str, _Runtime] = {}
_LOCK = threading.Lock()  # a process may serve several nodes' messages from several threads


def _runtime(spec: SimulationSpec) -> _Runtime:
    key = json.dumps(spec_to_run_config(spec), sort_keys=True)
    with _LOCK:
        if key not in _RUNTIMES:
            strategy, config = build_strategy(spec)
            _RUNTIMES[key] = _Runtime(spec, strategy.client_cls(config), load_model(spec.model))
        return _RUNTIMES[key]


def _client(runtime: _Runtime, context: Context) -> tuple[str, LocalTrainer]:
    """Return this node's client id and trainer, from its node config."""
    node = context.node_config
    if "data-path" in node:
        client_id = str(node.get("client-id", f"node-{context.node_id}"))
        if client_id not in runtime.trainers:
            return client_id, runtime.trainer(client_id, load_dataset(str(node["data-path"])))
        return client_id, runtime.trainers[client_id]
    if "partition-id" not in node:
        raise UsageError(
            "this Flower node has neither partition-id (simulation) nor data-path in its "
            "node config"
        )
    spec = runtime.spec
    client_id = client_ids(spec.clients)[int(node["partition-id"])]
    if client_id not in runtime.trainers:
        with _LOCK:
            if runtime.shares is None:
                runtime.shares = split_data(spec).clients
        return client_id, runtime.trainer(client_id, runtime.shares[client_id])
    return client_id, runtime.trainers[client_id]


def make_client_app(spec: SimulationSpec | None = None) -> ClientApp:
    """Build the ClientApp; without ``spec`` it reads one from the run config (``flwr run``)."""
    app = ClientApp()

    def runtime_for(context: Context) -> _Runtime:
        if spec is not None:
            return _runtime(spec)
        partitions = context.node_config.get("num-partitions")
        clients = int(partitions) if partitions is not None else None
        return _runtime(spec_from_run_config(context.run_config, clients=clients))

    @app.query(DESCRIBE_ACTION)
    def describe(msg: Message, context: Context) -> Message:
        client_id, trainer = _client(runtime_for(context), context)
        record = ConfigRecord({"client_id": client_id, "num_examples": trainer.num_examples})
        return Message(RecordDict({DESCRIBE_RECORD: record}), reply_to=msg)

    @app.train(TRAIN_ACTION)
    def train(msg: Message, context: Context) -> Message:
        runtime = runtime_for(context)
        _, trainer = _client(runtime, context)
        task = records_to_payload(msg.content)
        local_state = records_to_payload(context.state, LOCAL_STATE_PREFIX)
        cpu = time.process_time()
        update = runtime.client_half.run(task, local_state, trainer)
        # As the other engines do, so that all three count the same bytes per update.
        update.metrics[TASK_SECONDS] = float(time.process_time() - cpu)
        store_payload(context.state, local_state, LOCAL_STATE_PREFIX)
        return Message(payload_to_records(update), reply_to=msg)

    return app
