"""LinearUpdates' default aggregate: checks, weights, empty updates, tallies and metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import torch

from fedft.core.config import StrategyConfig
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, Failure, LinearUpdates, Result, Task


@dataclasses.dataclass(frozen=True)
class VecConfig(StrategyConfig):
    """No options."""


class VecServer(LinearUpdates[VecConfig]):
    """A global vector moved by the weighted mean of the clients' vectors."""

    def __init__(self, config: VecConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.model = torch.zeros(3, dtype=torch.float64)
        self.seen: list[str] = []

    def initialize(self, initial: Payload) -> None:
        self.model = initial.tensors["w"].to(torch.float64).clone()

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        return [Task(c.client_id, Payload()) for c in clients]

    def check_update(self, server_round: int, result: Result) -> str | None:
        w = result.payload.tensors.get("w")
        return None if w is None or w.shape == (3,) else "w must have 3 values"

    def update_size(self) -> int:
        return 3

    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        w = result.payload.tensors.get("w")
        return None if w is None else w.to(torch.float64)

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        self.model = self.model + mean
        return {"norm": float(mean.norm())}

    def round_tally(self) -> dict[str, MetricValue]:
        return {"empty": 0}

    def observe(
        self,
        server_round: int,
        result: Result,
        vector: torch.Tensor | None,
        tally: dict[str, MetricValue],
    ) -> None:
        self.seen.append(result.client_id)
        if vector is None:
            tally["empty"] = int(tally["empty"]) + 1

    def global_state(self) -> Payload:
        return Payload(tensors={"w": self.model.clone()})

    def state_dict(self) -> Payload:
        return self.global_state()

    def load_state_dict(self, state: Payload) -> None:
        self.initialize(state)


def result(cid: str, w: list[float] | None, n: int, loss: float = 0.0) -> Result:
    tensors = {} if w is None else {"w": torch.tensor(w)}
    return Result(cid, Payload(tensors=tensors, metrics={"num_examples": n, "train_loss": loss}))


def test_default_aggregate_applies_the_weighted_mean_of_accepted_vectors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = VecServer(VecConfig(), seed=0)
    server.initialize(Payload(tensors={"w": torch.ones(3)}))
    results = [
        result("a", [1.0, 0.0, 2.0], 1, loss=1.0),
        result("b", [4.0, 3.0, -1.0], 2, loss=4.0),
        result("bad", [1.0, 2.0], 50),
        result("none", None, 7),
    ]
    metrics = server.aggregate(1, iter(results), [Failure("gone", "timeout")])
    torch.testing.assert_close(server.model, torch.tensor([4.0, 3.0, 1.0], dtype=torch.float64))
    assert metrics == {
        "accepted": 2,
        "rejected": 1,
        "empty": 1,
        "failures": 1,
        "train_loss": 3.0,
        "norm": pytest.approx(float(torch.tensor([3.0, 2.0, 0.0]).norm())),
    }
    assert server.seen == ["a", "b", "none"]  # refused results are never observed
    assert "w must have 3 values" in caplog.text


def test_a_round_without_accepted_updates_leaves_the_model_alone() -> None:
    server = VecServer(VecConfig(), seed=0)
    server.initialize(Payload(tensors={"w": torch.ones(3)}))
    metrics = server.aggregate(1, [result("none", None, 3)], [])
    assert metrics == {"accepted": 0, "rejected": 0, "empty": 1, "failures": 0}
    assert torch.equal(server.model, torch.ones(3, dtype=torch.float64))
