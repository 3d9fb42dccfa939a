"""A secure aggregation participant over raw stubs, and a ``--secagg`` coordinator to face it.

The participant does the protocol's arithmetic with ``fedft.privacy.secagg`` (the state
machines), but talks to the coordinator only through the raw protobuf stubs of an
:class:`Attacker`, so a test can stop it before any stage or make it send anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedft.client.secagg_proto import (
    broadcast_from_proto,
    delivery_from_proto,
    keys_to_proto,
    request_from_proto,
    shares_to_proto,
    unmask_to_proto,
)
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.privacy.config import DPConfig
from fedft.privacy.secagg.client import SecAggClient
from fedft.privacy.secagg.linear import HAS_UPDATE
from fedft.privacy.secagg.settings import SecAggSettings
from fedft.privacy.secagg.task import MASKED, SecureTask
from fedft.privacy.secagg.wire import masked_tensor
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.app import CoordinatorService
from fedft.server.coordinator import CoordinatorSettings
from fedft.server.secure_coordinator import SecureCoordinator
from fedft.server.state.base import State
from tests.security.conftest import TIMEOUT, Attacker, Target, adapter

STAGES = ("keys", "shares", "masked", "unmask")


def make_secure_target(
    certs: Path,
    state: State,
    *,
    min_clients: int,
    rounds: int = 1,
    round_timeout_s: float = 30.0,
    stage_timeout_s: float = 3.0,
    secagg: SecAggSettings | None = None,
    privacy: DPConfig | None = None,
) -> Target:
    """Start a ``--secagg`` fedavg_lora coordinator over ``state`` on a free loopback port."""
    settings = CoordinatorSettings(
        rounds=rounds,
        min_clients=min_clients,
        round_timeout_s=round_timeout_s,
        liveness_s=60.0,
        heartbeat_interval_s=2.0,
        max_update_bytes=16 << 20,
    )
    coordinator = SecureCoordinator(
        state,
        get_strategy("fedavg_lora"),
        {"local_steps": 1},
        seed=7,
        settings=settings,
        model="secagg-model",
        initial=Payload(tensors=adapter()),
        secagg=secagg or SecAggSettings(),
        stage_timeout_s=stage_timeout_s,
        privacy=privacy,
    )
    running = CoordinatorService(coordinator, address="127.0.0.1:0", cert_dir=certs, max_workers=32)
    running.start()
    return Target(running, coordinator, (certs / "ca.pem").read_bytes())


def delta(seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    """A small adapter change, as one client's training would make."""
    g = torch.Generator().manual_seed(1000 + seed)
    return {name: torch.randn(t.shape, generator=g) * scale for name, t in adapter().items()}


class Participant:
    """One enrolled device running the protocol, able to stop before any stage."""

    def __init__(self, who: Attacker, seed: int, num_examples: int) -> None:
        self.who = who
        self.seed = seed
        self.num_examples = num_examples
        self.header: pb.TaskHeader | None = None
        self.task: SecureTask | None = None
        self.client: SecAggClient | None = None
        self.ended = ""  # the server's last word ("done" reason) if it cut us
        self.finished = False

    def fetch(self) -> SecureTask:
        """Fetch the task and set up the protocol state for it."""
        self.header, data = self.who.fetch()
        task = SecureTask.from_config(payload_from_bytes(data).config)
        assert task is not None, "the task carries no secure aggregation parameters"
        self.task = task
        self.directory: dict[int, Any] = {}
        self.client = SecAggClient(task.round_config(), task.me, self.who.key, self.directory)
        return task

    def step(self, **message: Any) -> pb.SecAggStepResponse:
        """Send a stage message (or poll) until the server says something other than wait."""
        assert self.header is not None
        request = pb.SecAggStepRequest(
            task_id=self.header.task_id, round=self.header.round, wait_ms=2000, **message
        )
        while True:
            response: pb.SecAggStepResponse = self.who.stub.SecAggStep(
                request, metadata=self.who.signed("SecAggStep"), timeout=TIMEOUT
            )
            if response.WhichOneof("next") != "wait":
                return response
            request = pb.SecAggStepRequest(
                task_id=self.header.task_id, round=self.header.round, wait_ms=2000
            )
            time.sleep(0.05)

    def vector(self) -> np.ndarray:
        """This device's update vector (its adapter change, in the adapter's order).

        Under DP (the task names an L2 clip) the device clips it first, as ours do.
        """
        vector = torch.cat([t.reshape(-1) for t in delta(self.seed).values()]).double().numpy()
        clip = self.task.l2_clip if self.task is not None else 0.0
        norm = float(np.linalg.norm(vector))
        return vector * (clip / norm) if 0 < clip < norm else vector

    def masked_payload(self, delivery: Any) -> bytes:
        """The masked input as the task's update."""
        assert self.client is not None
        assert self.task is not None
        masked = self.client.masked_input(delivery, self.vector(), self.task.weight)
        metrics = {"num_examples": self.num_examples, HAS_UPDATE: 1}
        return payload_to_bytes(
            Payload(tensors={MASKED: masked_tensor(masked.vector)}, metrics=metrics)
        )

    def play(self, stop_before: str = "") -> None:
        """Run every stage, or stop before ``stop_before`` (one of STAGES) as a dropout."""
        assert self.client is not None
        assert self.header is not None
        if stop_before == "keys":
            return
        reply = self.step(keys=keys_to_proto(self.client.advertise()))
        if self._cut(reply) or stop_before == "shares":
            return
        broadcast, identities = broadcast_from_proto(reply.broadcast)
        self.directory.update(identities)
        reply = self.step(shares=shares_to_proto(self.client.share_keys(broadcast).sealed))
        if self._cut(reply) or stop_before == "masked":
            return
        self.who.submit(self.header, self.masked_payload(delivery_from_proto(reply.shares)))
        if stop_before == "unmask":
            return
        reply = self.step()
        if self._cut(reply):
            return
        answer = self.client.unmask(request_from_proto(reply.unmask))
        reply = self.step(unmask=unmask_to_proto(answer))
        self._cut(reply)
        self.finished = True

    def _cut(self, reply: pb.SecAggStepResponse) -> bool:
        if reply.WhichOneof("next") == "done":
            self.ended = reply.done.reason
            return True
        return False


def play_all(
    participants: list[Participant], stops: dict[int, str] | None = None
) -> list[BaseException]:
    """Run every participant in its own thread (stages wait for one another); return errors."""
    errors: list[BaseException] = []

    def run(p: Participant, stop: str) -> None:
        try:
            p.play(stop)
        except BaseException as exc:  # reported to the test, which fails on it
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(p, (stops or {}).get(i, "")), daemon=True)
        for i, p in enumerate(participants)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait until ``predicate`` holds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.05)
