"""Accounting of a ledger with dp-accounting: reference values, grouping, adjacency, errors."""

from __future__ import annotations

import math

import dp_accounting as dpa
import pytest

from fedft.core.errors import UsageError
from fedft.privacy.accounting import PLD, RDP, epsilon, epsilon_curve, ledger_event, plan_noise
from fedft.privacy.ledger import LedgerEntry


def ledger(rounds: int, z: float, q: float, adjacency: str = "add-remove") -> list[LedgerEntry]:
    return [LedgerEntry(r, "gaussian", z, 1.0, q, 5, adjacency, 0.0) for r in range(1, rounds + 1)]


def test_reference_values_through_the_ledger() -> None:
    entries = ledger(1000, 1.0, 0.01)
    assert round(epsilon(entries, 1e-5, PLD) or 0, 4) == 1.8282
    assert round(epsilon(entries, 1e-5, RDP) or 0, 4) == 2.1014


def test_a_thousand_equal_rounds_are_one_self_composition() -> None:
    event = ledger_event(ledger(1000, 1.0, 0.01))
    assert isinstance(event, dpa.SelfComposedDpEvent)
    assert event.count == 1000


def test_changing_noise_composes_runs_in_between() -> None:
    mixed = ledger(50, 1.0, 0.1) + [
        LedgerEntry(r, "gaussian", 2.0, 1.0, 0.1, 5, "add-remove", 0.0) for r in range(51, 101)
    ]
    low = epsilon(ledger(100, 2.0, 0.1), 1e-5, RDP) or 0
    high = epsilon(ledger(100, 1.0, 0.1), 1e-5, RDP) or 0
    assert low < (epsilon(mixed, 1e-5, RDP) or 0) < high
    assert isinstance(ledger_event(mixed), dpa.ComposedDpEvent)


def test_replace_one_doubles_sensitivity_in_both_accountants() -> None:
    add_remove = ledger(1, 2.0, 1.0)
    replace = ledger(1, 2.0, 1.0, "replace-one")
    assert epsilon(add_remove, 1e-5, PLD) == pytest.approx(1.9931, abs=1e-3)
    assert epsilon(replace, 1e-5, PLD) == pytest.approx(4.3772, abs=1e-3)
    # RDP does not double it internally: we pass z / 2, which must match the PLD value closely.
    assert epsilon(replace, 1e-5, RDP) == pytest.approx(epsilon(ledger(1, 1.0, 1.0), 1e-5, RDP))
    assert epsilon(ledger(3, 2.0, 0.5, "replace-one"), 1e-5, RDP) is None


def test_no_noise_is_infinite_epsilon() -> None:
    assert epsilon(ledger(3, 0.0, 1.0), 1e-5) == math.inf


@pytest.mark.parametrize("delta", [1.0, 2.0, 0.0, -1e-5, math.nan])
def test_bad_delta(delta: float) -> None:
    with pytest.raises(UsageError, match="delta"):
        epsilon(ledger(1, 1.0, 1.0), delta)


def test_empty_ledger_and_mixed_adjacency() -> None:
    with pytest.raises(UsageError, match="empty"):
        epsilon([], 1e-5)
    with pytest.raises(UsageError, match="mixes"):
        epsilon(ledger(1, 1.0, 1.0) + ledger(1, 1.0, 1.0, "replace-one"), 1e-5)


def test_curve_is_increasing_and_ends_at_the_total() -> None:
    entries = ledger(100, 1.0, 0.1)
    curve = epsilon_curve(entries, 1e-5, points=5)
    assert [r for r, _ in curve] == [20, 40, 60, 80, 100]
    values = [e for _, e in curve]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(epsilon(entries, 1e-5, RDP))


def test_plan_hits_the_target() -> None:
    plan = plan_noise(2.0, 1e-5, sampling_rate=0.1, rounds=50)
    assert plan.epsilon_pld == pytest.approx(2.0, abs=1e-3)
    assert (plan.epsilon_rdp or 0) > plan.epsilon_pld  # RDP is the looser bound
    with pytest.raises(UsageError, match="target-epsilon"):
        plan_noise(-1.0, 1e-5, sampling_rate=0.1, rounds=50)
