"""Skellam RDP: the published bound, its Gaussian limit, and the subsampling bound's direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

from fedft.core.errors import UsageError
from fedft.privacy.accounting import PLD, RDP, epsilon, ledger_event
from fedft.privacy.ledger import ADD_REMOVE, GAUSSIAN, SKELLAM, LedgerEntry
from fedft.privacy.skellam import ORDERS, rdp_epsilon, skellam_curve, skellam_rdp, subsampled_rdp


def test_the_bound_by_hand() -> None:
    # a = 3, l2 = 10, l1 = 40, mu = 200: 3 * 100 / 400 + min((5 * 100 + 240) / 160000, 0.3)
    got = skellam_rdp(3, l2=10.0, l1=40.0, variance=200.0)
    assert got == pytest.approx(0.75 + 740 / 160_000)
    # Small variance: the second branch of the min, 3 l1 / (2 mu), is the smaller one.
    small = skellam_rdp(2, l2=1.0, l1=1.0, variance=1.0)
    assert small == pytest.approx(2 * 1 / 2 + 3 * 1 / 2)
    assert skellam_rdp(2, l2=1.0, l1=1.0, variance=0.0) == math.inf


def test_large_sensitivities_give_the_gaussian_curve() -> None:
    # Scaled up, the discretisation term vanishes: the Gaussian mechanism's a / (2 z^2).
    z, l2 = 1.3, 2.0**30
    curve = skellam_curve(l2=l2, l1=l2 * 1000, variance=(z * l2) ** 2, rate=1.0)
    gaussian = rdp_lib._compute_rdp_poisson_subsampled_gaussian(1.0, z, np.array(ORDERS, float))
    assert np.allclose(curve, gaussian, rtol=1e-9)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_the_general_subsampling_bound_is_above_the_exact_gaussian_one(rate: float) -> None:
    # For the Gaussian, dp-accounting's curve is exact; the general bound may only be looser,
    # and at small rates not by much.
    z = 1.0
    curve = skellam_curve(l2=2.0**30, l1=2.0**40, variance=(z * 2.0**30) ** 2, rate=rate)
    exact = rdp_lib._compute_rdp_poisson_subsampled_gaussian(rate, z, np.array(ORDERS, float))
    assert np.all(curve >= exact * (1 - 1e-9))
    eps = rdp_epsilon(100 * curve, 1e-5)
    eps_exact = rdp_lib.compute_epsilon(np.array(ORDERS, float), 100 * exact, 1e-5)[0]
    assert eps_exact <= eps <= 1.5 * eps_exact
    assert subsampled_rdp(2, rate, lambda a: 0.0) == pytest.approx(0.0, abs=1e-12)


def entry(rnd: int, z: float, *, mechanism: str = SKELLAM, rate: float = 1.0) -> LedgerEntry:
    l2 = 2.0**30 if mechanism == SKELLAM else 0.0
    return LedgerEntry(rnd, mechanism, z, 0.05, rate, 4, ADD_REMOVE, 0.0, "secagg", l2, l2 * 100)


def test_a_skellam_ledger_is_accounted_in_rdp_only() -> None:
    ledger = [entry(r, 1.0) for r in range(1, 11)]
    got = epsilon(ledger, 1e-5, RDP)
    # At these sensitivities, the Gaussian curve at the same orders (dp-accounting's own
    # default orders include fractional ones, so its epsilon is a little lower).
    orders = np.array(ORDERS, float)
    gaussian = rdp_lib._compute_rdp_poisson_subsampled_gaussian(1.0, 1.0, orders)
    assert got == pytest.approx(rdp_lib.compute_epsilon(orders, 10 * gaussian, 1e-5)[0])
    ten = [entry(r, 1.0, mechanism=GAUSSIAN) for r in range(1, 11)]
    assert got >= epsilon(ten, 1e-5, RDP)  # type: ignore[operator]
    assert epsilon(ledger, 1e-5, PLD) is None
    assert epsilon([entry(1, 0.0)], 1e-5, RDP) == math.inf
    # More realised noise (more survivors) costs less.
    assert epsilon([entry(r, 1.2) for r in range(1, 11)], 1e-5, RDP) < got  # type: ignore[operator]


def test_mixed_or_malformed_skellam_ledgers_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="mixes Skellam and Gaussian"):
        epsilon([entry(1, 1.0), entry(2, 1.0, mechanism=GAUSSIAN)], 1e-5, RDP)
    with pytest.raises(UsageError, match="no dp-accounting event"):
        ledger_event([entry(1, 1.0)])
    with pytest.raises(UsageError, match="l2_sensitivity"):
        LedgerEntry(1, SKELLAM, 1.0, 0.05, 1.0, 4, ADD_REMOVE, 0.0, "secagg", 0.0, 1.0)
    older = entry(1, 1.0, mechanism=GAUSSIAN).to_dict()
    del older["l2_sensitivity"], older["l1_sensitivity"]
    assert LedgerEntry.from_dict(older).l2_sensitivity == 0.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"distributed": True, "adaptive": True}, "needs a fixed --dp-clip"),
        ({"min_survivors": 3}, "needs --dp-distributed"),
        ({"distributed": True, "min_survivors": 1}, "must be >= 2"),
    ],
)
def test_distributed_settings_that_cannot_work_are_refused(
    extra: dict[str, object], message: str
) -> None:
    from fedft.privacy.config import DPConfig

    with pytest.raises(UsageError, match=message):
        DPConfig(noise_multiplier=1.0, clip=1.0, **extra)  # type: ignore[arg-type]
