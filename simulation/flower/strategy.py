"""The server half inside Flower: a Flower ``Strategy`` that hosts any fedft server plugin.

Flower's ``Strategy.start`` drives the rounds; this class maps each step onto the plugin:
``configure_train`` asks the plugin for its tasks and sends one message per task to the node
that serves that client; ``aggregate_train`` decodes the replies, turns error replies and
missing replies into ``Failure``s and calls the plugin's ``aggregate``. The plugin owns the
global state, so the ``arrays`` Flower passes around are only a copy of ``global_state()`` for
Flower's own bookkeeping (``Result.arrays``, ``evaluate_fn``).

Nodes register asynchronously in a simulation (Flower's ``get_node_ids`` is empty at first), so
the strategy waits, with a deadline, for the expected number of nodes, then asks each new node
who it is (client id and example count) with one ``query`` message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedft.core.errors import FedftError, ProtocolError
from fedft.core.hosting import REJECTED, accepted_results, rejected_count
from fedft.core.payload import MetricValue, Payload
from fedft.core.serde import payload_to_bytes
from fedft.core.strategy import ClientInfo, Failure, Result, ServerStrategy
from fedft.simulation.flower.client_app import (
    DESCRIBE_ACTION,
    DESCRIBE_RECORD,
    PROFILE_KEY,
    TRAIN_ACTION,
)
from fedft.simulation.flower.codec import payload_to_records, records_to_payload, tensors_to_record

logger = logging.getLogger(__name__)

TRAIN_TYPE = f"train.{TRAIN_ACTION}"
DESCRIBE_TYPE = f"query.{DESCRIBE_ACTION}"


class NoNodesError(FedftError):
    """No Flower node connected before the deadline."""


@dataclass
class RoundTraffic:
    """One round as the host saw it: payload bytes each way, participants, start time.

    Bytes are the size of each payload in fedft's own wire format, the measure every fedft
    engine reports, so reports from different engines compare directly.
    """

    up: int = 0
    down: int = 0
    participants: int = 0
    started: float = 0.0


class FedftStrategy(Strategy):
    """Runs a fedft ``ServerStrategy`` under Flower's ``Strategy.start`` loop."""

    def __init__(
        self,
        server_half: ServerStrategy[Any],
        *,
        min_nodes: int = 1,
        node_wait_s: float = 300.0,
        timeout_s: float = 3600.0,
        availability: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.server_half = server_half
        # Simulated availability (--availability): the ids reachable in a round; None is all.
        self.availability = availability
        self.available: dict[int, list[str]] = {}
        self.min_nodes = min_nodes
        self.node_wait_s = node_wait_s
        self.timeout_s = timeout_s
        self.clients: dict[str, ClientInfo] = {}
        self.node_of: dict[str, int] = {}
        self.traffic: dict[int, RoundTraffic] = {}
        self.round_metrics: dict[int, dict[str, MetricValue]] = {}  # what aggregate returned
        self._sent: dict[int, dict[int, str]] = {}  # round -> node id -> client id

    def global_arrays(self) -> ArrayRecord:
        """The plugin's global state as an ArrayRecord (what Flower calls the model)."""
        return tensors_to_record(self.server_half.global_state().tensors)

    # --- nodes -----------------------------------------------------------------------------------
    def _wait_for_nodes(self, grid: Grid) -> set[int]:
        deadline = time.monotonic() + self.node_wait_s
        while True:
            nodes = set(grid.get_node_ids())
            if len(nodes) >= self.min_nodes:
                return nodes
            if time.monotonic() > deadline:
                if nodes:
                    logger.warning("only %d of %d nodes connected", len(nodes), self.min_nodes)
                    return nodes
                raise NoNodesError(f"no Flower node connected within {self.node_wait_s:.0f} s")
            time.sleep(0.1)

    def discover(self, grid: Grid) -> list[ClientInfo]:
        """Learn who the connected nodes are; returns the reachable clients sorted by id."""
        nodes = self._wait_for_nodes(grid)
        known = set(self.node_of.values())
        questions = [
            Message(RecordDict(), dst_node_id=node, message_type=DESCRIBE_TYPE)
            for node in sorted(nodes - known)
        ]
        # A node answers who it is at once; waiting the whole run timeout (an hour) for one
        # that died (e.g. a Ray worker killed under memory pressure) would hang the host.
        for reply in grid.send_and_receive(questions, timeout=self.node_wait_s):
            node = reply.metadata.src_node_id
            if reply.has_error():
                logger.warning("node %d did not describe itself: %s", node, reply.error.reason)
                continue
            record = reply.content.config_records[DESCRIBE_RECORD]
            client_id, examples = record["client_id"], record["num_examples"]
            if not isinstance(client_id, str) or not isinstance(examples, int):
                logger.warning("node %d described itself wrongly: %s", node, dict(record))
                continue
            profile = record.get(PROFILE_KEY)
            properties = json.loads(profile) if isinstance(profile, str) else {}
            if client_id in self.node_of and self.node_of[client_id] != node:
                logger.warning("node %d claims client id %s, already taken", node, client_id)
                continue
            self.node_of[client_id] = node
            self.clients[client_id] = ClientInfo(client_id, examples, properties)
        for client_id in [c for c, n in self.node_of.items() if n not in nodes]:
            del self.node_of[client_id], self.clients[client_id]  # the node left
        return [self.clients[c] for c in sorted(self.clients)]

    # --- training --------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the plugin for this round's tasks; one message per task, to that client's node."""
        clients = self.discover(grid)  # before the clock starts: nodes join only once
        traffic = self.traffic[server_round] = RoundTraffic(started=time.perf_counter())
        if self.availability is not None:  # only the reachable clients are offered
            reachable = set(self.availability(server_round))
            clients = [c for c in clients if c.client_id in reachable]
            self.available[server_round] = [c.client_id for c in clients]
        tasks = self.server_half.configure(server_round, clients)
        sent = self._sent[server_round] = {}
        messages = []
        for task in tasks:
            node = self.node_of[task.client_id]
            traffic.down += len(payload_to_bytes(task.payload))
            sent[node] = task.client_id
            messages.append(
                Message(
                    payload_to_records(task.payload),
                    dst_node_id=node,
                    message_type=TRAIN_TYPE,
                    group_id=str(server_round),
                )
            )
        traffic.participants = len(messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode replies in client-id order (deterministic whatever the arrival order)."""
        sent = self._sent.pop(server_round, {})
        by_client: dict[str, Message] = {}
        for reply in replies:
            client_id = sent.get(reply.metadata.src_node_id)
            if client_id is not None:
                by_client[client_id] = reply
        failures = [
            Failure(client_id, "no reply before the round's timeout")
            for client_id in sorted(set(sent.values()) - set(by_client))
        ]
        results = list(self._results(server_round, by_client, failures))
        metrics = self.server_half.aggregate(server_round, iter(results), failures)
        metrics = {**metrics, REJECTED: rejected_count(failures)}
        self.round_metrics[server_round] = dict(metrics)
        return self.global_arrays(), MetricRecord(dict(metrics))

    def _results(
        self, server_round: int, replies: dict[str, Message], failures: list[Failure]
    ) -> Iterator[Result]:
        """The replies that decode and pass ``check_update`` (the host rule); the rest fail."""
        return accepted_results(
            self.server_half, server_round, self._decoded(server_round, replies, failures), failures
        )

    def _decoded(
        self, server_round: int, replies: dict[str, Message], failures: list[Failure]
    ) -> Iterator[Result]:
        traffic = self.traffic[server_round]
        for client_id in sorted(replies):
            reply = replies[client_id]
            if reply.has_error():
                failures.append(Failure(client_id, f"client error: {reply.error.reason}"))
                continue
            try:
                payload: Payload = records_to_payload(reply.content)
            except ProtocolError as exc:
                failures.append(Failure(client_id, f"undecodable update: {exc}"))
                continue
            traffic.up += len(payload_to_bytes(payload))
            yield Result(client_id, payload)

    # --- evaluation is central (the host's evaluate_fn); Flower's client-side one is unused ---
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send nothing: the host evaluates the global model centrally."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Nothing to aggregate."""
        return None

    def summary(self) -> None:
        """Log which plugin this strategy hosts."""
        logger.info(
            "fedft strategy %s hosted in Flower (waits for %d nodes)",
            type(self.server_half).__name__,
            self.min_nodes,
        )
