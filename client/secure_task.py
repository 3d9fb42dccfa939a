"""The device's part of a secure aggregation round: keys, shares, masked input, unmask.

The daemon hands over a task whose config carries a :class:`SecureTask`. The device advertises
fresh keys signed with its enrolled identity, seals shares of its secrets to its neighbours,
trains, and sends its update only masked (as the task's update); then it answers the unmask
question, refusing any that would expose one client. Any refusal or protocol error ends this
device's part of the round with a log line: the round goes on without it, or fails cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from fedft.client.connection import Connection, TaskMessage
from fedft.client.secagg_proto import (
    broadcast_from_proto,
    delivery_from_proto,
    keys_to_proto,
    request_from_proto,
    shares_to_proto,
    unmask_to_proto,
)
from fedft.core.device import TASK_SECONDS
from fedft.core.errors import ProtocolError
from fedft.core.payload import Payload
from fedft.core.serde import payload_to_bytes
from fedft.core.strategy import ClientStrategy
from fedft.core.trainer import Trainer
from fedft.privacy.secagg.client import SecAggClient
from fedft.privacy.secagg.errors import SecAggError
from fedft.privacy.secagg.linear import device_input
from fedft.privacy.secagg.task import MASKED, SecureTask
from fedft.privacy.secagg.wire import masked_tensor
from fedft.proto.v1 import coordinator_pb2 as pb

POLL_MS = 5_000


class RoundOver(Exception):
    """The coordinator ended this device's part of the round (``reason`` says why, or "")."""


class SecureParticipation:
    """Runs one secure aggregation task for the daemon."""

    def __init__(
        self,
        connection: Connection,
        retrying: Callable[[str, Callable[[], Any]], Any],
        report: Callable[[str], None],
        *,
        strategy: ClientStrategy[Any],
        trainer: Trainer,
    ) -> None:
        self.connection = connection
        self.retrying = retrying
        self.report = report
        self.strategy = strategy
        self.trainer = trainer

    def _step(self, message: TaskMessage, **stage: Any) -> pb.SecAggStepResponse:
        """Send a stage message (or nothing), then poll until the next stage's message."""
        request = pb.SecAggStepRequest(
            task_id=message.task_id, round=message.round, wait_ms=POLL_MS, **stage
        )
        while True:
            response = self._call(request)
            kind = response.WhichOneof("next")
            if kind == "done":
                raise RoundOver(response.done.reason)
            if kind != "wait":
                return response
            request = pb.SecAggStepRequest(
                task_id=message.task_id, round=message.round, wait_ms=POLL_MS
            )

    def _call(self, request: pb.SecAggStepRequest) -> pb.SecAggStepResponse:
        def call() -> pb.SecAggStepResponse:
            return self.connection.secagg_step(request)

        response: pb.SecAggStepResponse = self.retrying("secure aggregation", call)
        return response

    def run(
        self,
        message: TaskMessage,
        task: Payload,
        secure: SecureTask,
        train: Callable[[], Payload],
    ) -> bool:
        """Take part in the round; True when this device's masked input went into the sum."""
        number = message.round
        try:
            return self._run(message, task, secure, train)
        except RoundOver as over:
            if over.args[0]:
                self.report(f"round {number}: secure aggregation ended for us: {over.args[0]}")
            return False
        except (SecAggError, ProtocolError) as exc:
            self.report(f"round {number}: secure aggregation refused: {exc}")
            return False
        except grpc.RpcError as exc:
            if exc.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.INVALID_ARGUMENT,
            ):
                self.report(f"round {number}: secure aggregation refused: {exc.details()}")
                return False
            raise

    def _run(
        self,
        message: TaskMessage,
        task: Payload,
        secure: SecureTask,
        train: Callable[[], Payload],
    ) -> bool:
        key = self.connection.key
        if key is None:
            raise ProtocolError("no client identity to sign keys with")
        directory: dict[int, Any] = {}  # filled from the broadcast, before any check needs it
        client = SecAggClient(secure.round_config(), secure.me, key, directory)
        reply = self._step(message, keys=keys_to_proto(client.advertise()))
        broadcast, identities = broadcast_from_proto(reply.broadcast)
        directory.update(identities)
        shares = client.share_keys(broadcast)
        reply = self._step(message, shares=shares_to_proto(shares.sealed))
        delivery = delivery_from_proto(reply.shares)
        update = train()
        entry = device_input(
            self.strategy, task, update, self.trainer, secure.clip, l2_clip=secure.l2_clip
        )
        vector = entry.vector if entry.vector is not None else np.zeros(secure.length)
        weight = secure.weight if entry.vector is not None else 0.0
        masked = client.masked_input(delivery, vector, weight)
        metrics = dict(entry.public.metrics)
        if TASK_SECONDS in update.metrics:
            metrics[TASK_SECONDS] = update.metrics[TASK_SECONDS]
        data = payload_to_bytes(
            Payload(tensors={MASKED: masked_tensor(masked.vector)}, metrics=metrics)
        )
        try:
            self.retrying(
                "submit", lambda: self.connection.submit(message.task_id, message.round, data)
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise  # ALREADY_EXISTS: an earlier attempt got through before its answer
        self.report(f"round {message.round}: sent the masked update ({len(data) / 1e6:.2f} MB)")
        reply = self._step(message)
        answer = client.unmask(request_from_proto(reply.unmask))
        try:
            self._step(message, unmask=unmask_to_proto(answer))
        except RoundOver as over:
            if over.args[0]:
                raise
        return True
