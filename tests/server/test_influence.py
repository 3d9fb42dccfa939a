"""The host's influence bounds: the examples cap and the update-norm bound before the strategy."""

from __future__ import annotations

import torch

from fedft.core.payload import Payload
from fedft.core.registry import get_strategy
from fedft.core.strategy import Result
from fedft.server.influence import InfluenceBounds
from fedft.server.settings import CoordinatorSettings

SPEC = get_strategy("fedavg_lora")
GLOBAL = {"m.lora_A": torch.zeros(2, 4), "m.lora_B": torch.zeros(4, 2)}


def bounds(reported: int, **settings: object) -> InfluenceBounds:
    server = SPEC.server_cls(SPEC.make_config({}), seed=0)
    server.initialize(Payload(tensors=dict(GLOBAL)))
    config = CoordinatorSettings(rounds=1, **settings)  # type: ignore[arg-type]
    return InfluenceBounds(lambda _: reported, config, lambda: server)


def result(scale: float = 0.1, examples: object = 5) -> Result:
    tensors = {k: v + scale for k, v in GLOBAL.items()}
    return Result("c", Payload(tensors=tensors, metrics={"num_examples": examples}))  # type: ignore[dict-item]


def test_the_cap_is_the_smaller_of_the_server_option_and_the_report() -> None:
    assert bounds(0, max_num_examples=50).examples_cap("c") == 50
    assert bounds(7, max_num_examples=50).examples_cap("c") == 7
    assert bounds(70, max_num_examples=50).examples_cap("c") == 50


def test_claims_above_the_cap_and_non_ints_are_refused() -> None:
    check = bounds(10).check
    assert check(1, result(examples=10)) is None
    assert "above" in str(check(1, result(examples=11)))
    assert "must be an int" in str(check(1, result(examples=2.5)))


def test_the_norm_bound() -> None:
    check = bounds(0, max_update_norm=1.0).check
    assert check(1, result(scale=0.1)) is None
    assert "norm" in str(check(1, result(scale=10.0)))
