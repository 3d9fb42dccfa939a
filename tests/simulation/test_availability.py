"""Availability models: parsing with one-line errors, seeded draws, the long-run rates."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from fedft.core.errors import UsageError
from fedft.simulation.availability import Availability, AvailabilitySpec, parse_availability
from fedft.simulation.spec import SimulationSpec

CLIENTS = {f"c{i:02d}": [f"cat{i % 4}"] for i in range(16)}


def model(text: str, seed: int = 0) -> Availability:
    return Availability(parse_availability(text), seed, CLIENTS)


def rate(availability: Availability, client: str, rounds: int = 2000) -> float:
    return sum(client in availability.available(r) for r in range(1, rounds + 1)) / rounds


def test_parse_valid_specs() -> None:
    assert parse_availability("always") == AvailabilitySpec()
    assert parse_availability("bernoulli:0.3") == AvailabilitySpec("bernoulli", 0.3, 0.3)
    assert parse_availability("bernoulli:0.1-0.9") == AvailabilitySpec("bernoulli", 0.1, 0.9)
    assert parse_availability("bernoulli-by-category:0.1,0.9").kind == "bernoulli-by-category"
    assert parse_availability("markov:0.2,0.4") == AvailabilitySpec("markov", 0.2, 0.4)
    assert parse_availability("cyclic:10") == AvailabilitySpec("cyclic", period=10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sometimes", "is not one of"),
        ("bernoulli:1.5", "must be in"),
        ("bernoulli:x", "is not a number"),
        ("bernoulli:0.9-0.1", "is above HIGH"),
        ("bernoulli-by-category:0.5", "is not one of"),
        ("markov:0,0", "cannot both be 0"),
        ("cyclic:1", "PERIOD must be >= 2"),
        ("cyclic:ten", "is not an integer"),
    ],
)
def test_bad_specs_are_one_line_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        parse_availability(text)
    assert "\n" not in str(caught.value)


def test_simulation_spec_validates_the_flags(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--availability"):
        SimulationSpec(out=tmp_path, availability="bernoulli:2")
    with pytest.raises(UsageError, match="--participation"):
        SimulationSpec(out=tmp_path, participation="fedbuff")
    assert SimulationSpec(out=tmp_path, participation="fedau").run_spec().participation == "fedau"


def test_draws_are_seeded_and_rates_match_the_probabilities() -> None:
    first, again, other = (
        model("bernoulli:0.1-0.9"),
        model("bernoulli:0.1-0.9"),
        model("bernoulli:0.1-0.9", seed=1),
    )
    rounds = range(1, 30)
    assert [first.available(r) for r in rounds] == [again.available(r) for r in rounds]
    assert [first.available(r) for r in rounds] != [other.available(r) for r in rounds]
    for client, p in first.probability.items():
        assert 0.1 <= p <= 0.9
        assert rate(first, client) == pytest.approx(p, abs=0.04)
    assert model("always").available(7) == sorted(CLIENTS)


def test_by_category_ties_probability_to_the_data() -> None:
    availability = model("bernoulli-by-category:0.1,0.9")
    levels = availability.category_probability()
    assert sorted(set(levels.values())) == pytest.approx([0.1, 0.1 + 0.8 / 3, 0.9 - 0.8 / 3, 0.9])
    for client, cats in CLIENTS.items():  # clients of one category share its probability
        assert availability.probability[client] == pytest.approx(levels[cats[0]])
    rare = min(availability.probability, key=availability.probability.__getitem__)
    assert rate(availability, rare) == pytest.approx(0.1, abs=0.03)


def test_markov_is_sticky_with_the_stationary_rate() -> None:
    availability = model("markov:0.1,0.3")
    on = [("c00" in availability.available(r)) for r in range(1, 4001)]
    assert sum(on) / len(on) == pytest.approx(0.25, abs=0.05)
    switches = sum(a != b for a, b in itertools.pairwise(on))
    # Expected switches per round: 2 * 0.25 * 0.3 = 0.15, far below an independent coin's 0.375.
    assert switches / len(on) == pytest.approx(0.15, abs=0.04)


def test_cyclic_is_on_half_of_every_period_with_its_own_phase() -> None:
    availability = model("cyclic:6")
    for client in CLIENTS:
        pattern = [client in availability.available(r) for r in range(1, 13)]
        assert sum(pattern[:6]) == 3
        assert pattern[:6] == pattern[6:]
    phases = {tuple(c in availability.available(r) for r in range(1, 7)) for c in CLIENTS}
    assert len(phases) > 1


@pytest.mark.slow
def test_the_in_process_engine_offers_only_reachable_clients_and_runs_fedau(
    tmp_path: Path,
) -> None:
    from fedft.simulation.console import run_with_progress
    from fedft.simulation.engine import InProcessEngine
    from fedft.strategies.participation import FedAUServer

    spec = SimulationSpec(
        model="tiny",
        clients=6,
        rounds=3,
        seed=0,
        out=tmp_path,
        rouge_examples=0,
        eval_examples=8,
        availability="bernoulli-by-category:0.2,0.9",
        participation="fedau",
    )
    engine = InProcessEngine(spec)
    assert isinstance(engine.server_half, FedAUServer)
    schedule = [engine.availability.available(r) for r in range(1, 4)]
    run_with_progress(spec, quiet=True)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["participation"] == "fedau"
    assert data["availability"]["spec"] == "bernoulli-by-category:0.2,0.9"
    assert set(data["availability"]["probability"]) == set(engine.clients)
    for record, available in zip(data["rounds"], schedule, strict=True):
        # The same seeded schedule, and only reachable clients got a task.
        assert record["available"] == available
        assert sorted(record["clients"]) == available
        assert record["participants"] == len(available)
        assert record["metrics"]["fedau.known_clients"] >= len(available)
    assert any(len(a) < 6 for a in schedule), "some client sat a round out"
