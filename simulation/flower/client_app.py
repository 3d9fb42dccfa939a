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

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedft.core.device import TASK_SECONDS, DeviceProfile, stamp_task_seconds, tier_profile
from fedft.core.errors import UsageError
from fedft.core.serde import payload_to_bytes
from fedft.privacy.local import CLIENTS_DIR
from fedft.runtime.assembly import ClientRuntime, assemble_client
from fedft.runtime.data import Example, load_dataset
from fedft.runtime.device import measure_profile
from fedft.runtime.trainer import LocalTrainer
from fedft.simulation.data_split import client_ids, split_data
from fedft.simulation.devices import assign_tiers
from fedft.simulation.flower.codec import payload_to_records, records_to_payload, store_payload
from fedft.simulation.flower.run_config import spec_from_run_config, spec_to_run_config
from fedft.simulation.spec import SimulationSpec

TRAIN_ACTION = "fedft"  # message type "train.fedft"
DESCRIBE_ACTION = "fedft_describe"  # message type "query.fedft_describe"
DESCRIBE_RECORD = "fedft.client"
LOCAL_STATE_PREFIX = "fedft.local."
PROFILE_KEY = "device_profile"  # JSON of the device.* properties, with --device-mix


@dataclass
class _Runtime:
    """What one process holds for one run: the assembled runtime and each client's trainer."""

    spec: SimulationSpec
    runtime: ClientRuntime
    trainers: dict[str, LocalTrainer] = field(default_factory=dict)
    shares: dict[str, list[Example]] | None = None
    tiers: dict[str, str] = field(default_factory=dict)
    base_profile: DeviceProfile | None = None  # this process's measured profile (--device-mix)

    def trainer(self, client_id: str, examples: list[Example]) -> LocalTrainer:
        if client_id not in self.trainers:
            trainer = self.runtime.trainer(examples)
            if client_id in self.tiers and self.base_profile is None:
                batch = int(getattr(self.runtime.config, "batch_size", 8))
                self.base_profile = measure_profile(trainer, batch_size=batch)
            self.trainers[client_id] = trainer
        return self.trainers[client_id]

    def profile(self, client_id: str) -> DeviceProfile | None:
        """The simulated device profile of ``client_id`` (None without ``--device-mix``)."""
        if client_id not in self.tiers or self.base_profile is None:
            return None
        return tier_profile(self.base_profile, self.tiers[client_id])


_RUNTIMES: dict[str, _Runtime] = {}
_LOCK = threading.Lock()  # a process may serve several nodes' messages from several threads


def _runtime(spec: SimulationSpec) -> _Runtime:
    key = json.dumps(spec_to_run_config(spec), sort_keys=True)
    with _LOCK:
        if key not in _RUNTIMES:
            # The same assembly as every other host: quantization, device, client-side DP.
            tiers = (
                assign_tiers(spec.device_mix, client_ids(spec.clients)) if spec.device_mix else {}
            )
            _RUNTIMES[key] = _Runtime(spec, assemble_client(spec.run_spec()), tiers=tiers)
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
        runtime = runtime_for(context)
        client_id, trainer = _client(runtime, context)
        record = ConfigRecord({"client_id": client_id, "num_examples": trainer.num_examples})
        profile = runtime.profile(client_id)
        if profile is not None:  # what a real device sends with its enrollment
            record[PROFILE_KEY] = json.dumps(profile.to_properties())
        return Message(RecordDict({DESCRIBE_RECORD: record}), reply_to=msg)

    @app.train(TRAIN_ACTION)
    def train(msg: Message, context: Context) -> Message:
        runtime = runtime_for(context)
        client_id, trainer = _client(runtime, context)
        task = records_to_payload(msg.content)
        local_state = records_to_payload(context.state, LOCAL_STATE_PREFIX)
        cpu = time.process_time()
        update = runtime.runtime.client_half.run(task, local_state, trainer)
        cpu = time.process_time() - cpu
        local_dp = runtime.runtime.local_dp
        if local_dp is not None:  # the client's own ledger, as the daemon keeps it
            round_number = int(msg.metadata.group_id or 0)  # the strategy sends it there
            local_dp.record_release(runtime.spec.out / CLIENTS_DIR / client_id, round_number)
        profile = runtime.profile(client_id)
        if profile is not None:  # the same stamp as every other host, so engines agree
            stamp_task_seconds(update, cpu, len(payload_to_bytes(task)), profile)
        else:  # as the other engines do, so that all three count the same bytes per update
            update.metrics[TASK_SECONDS] = float(cpu)
        store_payload(context.state, local_state, LOCAL_STATE_PREFIX)
        return Message(payload_to_records(update), reply_to=msg)

    return app
