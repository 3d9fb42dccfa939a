"""Robust aggregation: one malicious client of ten cannot move the global model past the bound."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.strategy import Result
from fedft.privacy.robust import RobustConfig, RobustServer, combine, robust_from_state

SPEC = get_strategy("fedavg_lora")
GLOBAL = {"m.lora_A": torch.zeros(4, 16), "m.lora_B": torch.ones(16, 4)}
BOUND = 0.5


def flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors.values()])


def results(attack: str) -> tuple[list[Result], torch.Tensor]:
    """Nine honest updates (small steps) and one attacker; also each coordinate's honest max."""
    g = torch.Generator().manual_seed(3)
    honest = [
        {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in GLOBAL.items()}
        for _ in range(9)
    ]
    out = [
        Result(f"h{i}", Payload(tensors=t, metrics={"num_examples": 10}))
        for i, t in enumerate(honest)
    ]
    step = {k: honest[0][k] - v for k, v in GLOBAL.items()}
    examples = 10
    if attack == "scaled":
        evil = {k: GLOBAL[k] + 1e6 * s for k, s in step.items()}
    elif attack == "examples":
        evil, examples = {k: GLOBAL[k] + 100 * s for k, s in step.items()}, 2**62
    else:  # sign flip, amplified
        evil = {k: GLOBAL[k] - 1e3 * s for k, s in step.items()}
    out.append(Result("evil", Payload(tensors=evil, metrics={"num_examples": examples})))
    reach = torch.stack([(flat(t) - flat(GLOBAL)).abs() for t in honest]).amax(dim=0)
    return out, reach


def moved(config: RobustConfig | None, attack: str) -> tuple[float, float]:
    inner = SPEC.server_cls(SPEC.make_config({}), seed=0)
    server = inner if config is None else RobustServer(inner, config, seed=0)
    server.initialize(Payload(tensors=dict(GLOBAL)))
    updates, reach = results(attack)
    server.aggregate(1, updates, [])
    after = flat(server.global_state().tensors)
    return float((after - flat(GLOBAL)).norm()), float(reach.norm())


@pytest.mark.parametrize("attack", ["scaled", "examples", "sign"])
def test_plain_fedavg_is_moved_far(attack: str) -> None:
    distance, reach = moved(None, attack)
    assert distance > 10 * reach


@pytest.mark.parametrize("attack", ["scaled", "examples", "sign"])
def test_norm_bounding_keeps_the_step_within_the_bound(attack: str) -> None:
    distance, _ = moved(RobustConfig("norm", bound=BOUND), attack)
    assert distance <= BOUND + 1e-6


@pytest.mark.parametrize("rule", ["trimmed", "median"])
@pytest.mark.parametrize("attack", ["scaled", "examples", "sign"])
def test_trimmed_mean_and_median_stay_within_the_honest_range(rule: str, attack: str) -> None:
    distance, reach = moved(RobustConfig(rule, trim=0.1), attack)
    assert distance <= reach + 1e-6  # every coordinate lies within the honest clients' range


def test_combine_rules_on_a_small_matrix() -> None:
    m = torch.tensor([[1.0], [2.0], [3.0], [100.0]], dtype=torch.float64)
    assert combine(m, RobustConfig("median")).item() == pytest.approx(2.5)
    assert combine(m, RobustConfig("trimmed", trim=0.25)).item() == pytest.approx(2.5)
    assert combine(m, RobustConfig("norm", bound=1.0)).item() == pytest.approx(1.0)


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        RobustConfig("mean")
    with pytest.raises(UsageError):
        RobustConfig("norm")
    with pytest.raises(UsageError):
        RobustConfig("trimmed", trim=0.5)


def test_the_coordinator_aggregates_through_the_wrapper() -> None:
    from fedft.server.coordinator import Coordinator, CoordinatorSettings
    from fedft.server.state.memory import InMemoryState

    coordinator = Coordinator(
        InMemoryState(),
        SPEC,
        {},
        seed=0,
        settings=CoordinatorSettings(rounds=1),
        model="m",
        initial=Payload(tensors=dict(GLOBAL)),
        robust=RobustConfig("median"),
    )
    assert isinstance(coordinator.server_half, RobustServer)


@pytest.mark.parametrize("restart_with", [None, RobustConfig("norm", bound=0.5)])
def test_a_restart_keeps_the_stored_rule(restart_with: RobustConfig | None, tmp_path: Path) -> None:
    from fedft.server.coordinator import Coordinator, CoordinatorSettings
    from fedft.server.state.factory import open_state

    url = f"sqlite:///{tmp_path / 'run.db'}"
    rule = RobustConfig("trimmed", bound=2.0, trim=0.2)

    def start(robust: RobustConfig | None) -> Coordinator:
        return Coordinator(
            open_state(url),
            SPEC,
            {},
            seed=0,
            settings=CoordinatorSettings(rounds=1),
            model="m",
            initial=Payload(tensors=dict(GLOBAL)),
            robust=robust,
        )

    first = start(rule)
    checkpoint = first.server_half.state_dict()
    assert robust_from_state(checkpoint) == rule
    first.state.close()
    # Restarted without the flag, or with another rule: the run's own rule is kept.
    second = start(restart_with)
    assert isinstance(second.server_half, RobustServer)
    assert second.server_half.robust == rule
    # The wrapped strategy loads its own checkpoint, without the wrapper's entries.
    assert robust_from_state(second.server_half.inner.state_dict()) is None
    second.state.close()
