"""Every client half that computes update vectors on the device agrees with its server half."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from fedft.core.payload import Payload
from fedft.core.registry import available_strategies, get_strategy
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, LinearUpdates, Result
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer

# Small settings per strategy, so a real local round on the tiny model takes a moment.
OPTIONS: dict[str, dict[str, Any]] = {
    "fedavg_lora": {"rank": 2, "local_steps": 2, "batch_size": 2},
    "fedkseed": {"seeds": 64, "local_steps": 3, "batch_size": 2},
    "fedkseed_pro": {"seeds": 64, "local_steps": 3, "batch_size": 2},
    "ferret": {"seeds": 8, "local_steps": 2, "batch_size": 2, "rank": 2},
}


def _wire(payload: Payload) -> Payload:
    return payload_from_bytes(payload_to_bytes(payload))


def _linear_strategies() -> list[str]:
    names = []
    for name in available_strategies():
        spec = get_strategy(name)
        if issubclass(spec.server_cls, LinearUpdates):
            names.append(name)
    return names


def test_every_linear_strategy_computes_vectors_on_the_device() -> None:
    linear = _linear_strategies()
    assert set(OPTIONS) <= set(linear)
    for name in linear:
        spec = get_strategy(name)
        client = spec.client_cls(spec.make_config(OPTIONS.get(name, {})))
        assert client.computes_vectors(), (
            f"{name}'s client half cannot run under secure aggregation"
        )


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_device_vector_is_the_server_vector(
    name: str, tiny_bundle: Callable[[], ModelBundle]
) -> None:
    spec = get_strategy(name)
    config = spec.make_config(OPTIONS[name])
    client = spec.client_cls(config)
    server = spec.server_cls(config, seed=3)
    data = [Example(f"question {i}?", f"answer number {i}.") for i in range(6)]
    trainer = LocalTrainer(tiny_bundle(), data, max_length=32)
    client.prepare(trainer)
    server.initialize(_wire(client.initial_state(trainer)))
    for server_round in (1, 2):  # round 2 builds on a changed global model
        (task,) = server.configure(server_round, [ClientInfo("c0", len(data))])
        down = _wire(task.payload)
        reply = client.run(down, Payload(), trainer)
        on_device = client.update_vector(down, reply, trainer)
        result = Result("c0", _wire(reply))
        assert server.check_update(server_round, result) is None
        on_server = server.update_vector(server_round, result)
        assert on_device is not None
        assert on_server is not None
        assert on_device.dtype == torch.float64
        assert on_device.shape == (server.update_size(),)
        assert torch.count_nonzero(on_server) > 0
        torch.testing.assert_close(on_device, on_server, rtol=0, atol=0)
        server.apply_update(server_round, on_server)


def test_a_resync_request_carries_no_vector(tiny_bundle: Callable[[], ModelBundle]) -> None:
    spec = get_strategy("fedkseed")
    client = spec.client_cls(spec.make_config(OPTIONS["fedkseed"]))
    trainer = LocalTrainer(tiny_bundle(), [Example("q?", "a.")], max_length=32)
    client.prepare(trainer)
    request = client.resync_request(trainer)
    assert client.update_vector(Payload(), request, trainer) is None
