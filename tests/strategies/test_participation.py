"""FedAU: interval estimates converge to 1/p, the aggregate is unbiased, checkpoints round-trip."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
import torch

from fedft.core.config import StrategyConfig
from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, LinearUpdates, Result, Task
from fedft.runtime.server_assembly import wrap_server
from fedft.strategies.participation import FedAUServer, participation_from_state


@dataclass(frozen=True)
class PointConfig(StrategyConfig):
    """No options: the model is one point."""


class PointServer(LinearUpdates[PointConfig]):
    """A real linear strategy on a 1-d model: each client's update is its payload's ``delta``."""

    def __init__(self, config: PointConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.x = torch.zeros(1, dtype=torch.float64)

    def initialize(self, initial: Payload) -> None:
        self.x = initial.tensors["x"].to(torch.float64).clone()

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        return [Task(c.client_id, Payload(tensors={"x": self.x.clone()})) for c in clients]

    def update_size(self) -> int:
        return 1

    def update_vector(self, server_round: int, result: Result) -> torch.Tensor | None:
        return result.payload.tensors["delta"].to(torch.float64)

    def apply_update(self, server_round: int, mean: torch.Tensor) -> dict[str, MetricValue]:
        self.x = self.x + mean
        return {}

    def global_state(self) -> Payload:
        return Payload(tensors={"x": self.x.clone()})

    def state_dict(self) -> Payload:
        return self.global_state()

    def load_state_dict(self, state: Payload) -> None:
        self.x = state.tensors["x"].to(torch.float64).clone()


def point(participation: str) -> PointServer | FedAUServer:
    server, _ = wrap_server(PointServer(PointConfig(), seed=0), seed=0, participation=participation)
    server.initialize(Payload(tensors={"x": torch.zeros(1)}))
    assert isinstance(server, (PointServer, FedAUServer))
    return server


def play(
    server: PointServer | FedAUServer,
    optima: dict[str, float],
    probability: dict[str, float],
    rounds: int,
    *,
    step: float = 0.05,
    seed: int = 1,
    first: int = 1,
) -> list[float]:
    """Bernoulli participation; a present client moves ``step`` of the way to its optimum."""
    draw = random.Random(seed)
    infos = [ClientInfo(c, 10) for c in sorted(optima)]
    path = []
    for number in range(first, first + rounds):
        present = [i for i in infos if draw.random() < probability[i.client_id]]
        tasks = server.configure(number, present)
        results = []
        for task in tasks:
            x = float(task.payload.tensors["x"][0])
            delta = torch.tensor([step * (optima[task.client_id] - x)], dtype=torch.float64)
            results.append(
                Result(
                    task.client_id, Payload(tensors={"delta": delta}, metrics={"num_examples": 10})
                )
            )
        server.aggregate(number, iter(results), [])
        path.append(float(server.global_state().tensors["x"][0]))
    return path


PROBABILITY = {"a": 0.1, "b": 0.25, "c": 0.5, "d": 0.9}
OPTIMA = {"a": 10.0, "b": 0.0, "c": 0.0, "d": -2.0}


def test_weights_converge_to_one_over_p_under_bernoulli_participation() -> None:
    server = point("fedau")
    assert isinstance(server, FedAUServer)
    play(server, OPTIMA, PROBABILITY, 4000)
    weights = server.weights()
    for client, p in PROBABILITY.items():
        # The cutoff K=50 truncates intervals: E[min(G, K)] = (1 - (1-p)^K) / p.
        expected = (1 - (1 - p) ** server.cutoff) / p
        assert weights[client] == pytest.approx(expected, rel=0.08), client
    assert weights["a"] == pytest.approx(1 / 0.1, rel=0.1)


def test_the_fedau_aggregate_is_unbiased_where_fedavg_is_not() -> None:
    optimum = sum(OPTIMA.values()) / len(OPTIMA)  # equal data sizes: the mean of the optima
    fedavg = play(point("none"), OPTIMA, PROBABILITY, 3000)
    fedau = play(point("fedau"), OPTIMA, PROBABILITY, 3000)
    tail_avg = sum(fedavg[1000:]) / 2000
    tail_au = sum(fedau[1000:]) / 2000
    # FedAvg is pulled towards the often-present clients' optima (c, d), far below the truth;
    # FedAU settles at the true optimum.
    assert tail_avg < optimum - 2.0
    assert tail_au == pytest.approx(optimum, abs=0.25)


def test_state_dict_round_trip_keeps_the_estimates_and_the_run() -> None:
    server = point("fedau")
    assert isinstance(server, FedAUServer)
    play(server, OPTIMA, PROBABILITY, 200)
    state = server.state_dict()
    assert participation_from_state(state) == "fedau"
    restored = point("fedau")
    assert isinstance(restored, FedAUServer)
    restored.load_state_dict(state)
    assert restored.weights() == server.weights()
    assert restored.history == server.history
    # Both continue identically, as a restarted coordinator must.
    assert play(server, OPTIMA, PROBABILITY, 50, seed=7, first=201) == play(
        restored, OPTIMA, PROBABILITY, 50, seed=7, first=201
    )
    plain = PointServer(PointConfig(), seed=0)
    plain.load_state_dict(state)  # the wrapped strategy ignores the fedau.* entries it never wrote


def test_a_late_newcomer_counts_as_absent_since_the_start() -> None:
    server = point("fedau")
    assert isinstance(server, FedAUServer)
    play(server, {"a": 1.0}, {"a": 1.0}, 5)
    play(server, {"a": 1.0, "late": 1.0}, {"a": 1.0, "late": 1.0}, 1, first=6)
    late = server.history["late"]
    assert (late.intervals, late.interval_sum, late.absent) == (1, 6.0, 0)


def test_dp_and_unknown_participation_values_are_refused() -> None:
    from fedft.privacy.config import dp_config_from_flags

    dp = dp_config_from_flags(
        noise=1.0,
        clip=0.1,
        adaptive=False,
        sampling_rate=1.0,
        count_stddev=None,
        canaries=0,
        all_iterates=False,
    )
    with pytest.raises(UsageError, match="cannot be combined"):
        wrap_server(PointServer(PointConfig(), seed=0), seed=0, dp=dp, participation="fedau")
    with pytest.raises(UsageError, match="--participation must be one of"):
        wrap_server(PointServer(PointConfig(), seed=0), seed=0, participation="fedbuff")
