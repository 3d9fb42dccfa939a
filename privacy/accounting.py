"""Turn a privacy ledger into epsilon(delta) with dp-accounting, composed in one go.

Composing round by round is slow (1,000 PLD compositions take minutes), so the ledger is
grouped into runs of identical rounds and each run becomes one ``SelfComposedDpEvent``: a
1,000-round ledger is a single composition. PLD gives the reported epsilon (tight, and a valid
upper bound with its pessimistic discretisation); RDP is the fast, looser cross-check.

Distributed DP's Skellam rounds have no PLD in dp-accounting: their ledger is accounted in
RDP only (``fedft.privacy.skellam``), and the PLD answer is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting as dpa
from dp_accounting.pld import privacy_loss_distribution as pld_lib

from fedft.core.errors import UsageError
from fedft.privacy.ledger import ADD_REMOVE, REPLACE_ONE, SKELLAM, LedgerEntry, runs
from fedft.privacy.skellam import rdp_epsilon, skellam_curve

PLD = "pld"
RDP = "rdp"
METHODS = (PLD, RDP)
# 1e-4 reproduces the tight epsilon to 4 decimals; 1e-3 is 8x faster but off in the 4th.
PLD_DISCRETIZATION = 1e-4
LOG_MASS_TRUNCATION = -30.0


def check_delta(delta: float) -> float:
    """Return ``delta`` if it is a usable DP delta, else raise a one-line UsageError."""
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and 0 < delta < 1):
        raise UsageError(f"delta must be in (0, 1), got {delta}")
    return float(delta)


def _relation(entries: Sequence[LedgerEntry]) -> str:
    kinds = {e.adjacency for e in entries}
    if len(kinds) > 1:
        raise UsageError(f"the ledger mixes adjacency notions {sorted(kinds)}; cannot compose")
    return kinds.pop()


def _event(entry: LedgerEntry, noise: float) -> Any:
    gaussian = dpa.GaussianDpEvent(noise)
    if entry.sampling_rate >= 1.0:
        return gaussian
    return dpa.PoissonSampledDpEvent(entry.sampling_rate, gaussian)


def ledger_event(entries: Sequence[LedgerEntry], *, rdp: bool = False) -> Any:
    """Return the whole ledger as one dp-accounting event (runs of equal rounds self-composed).

    With ``rdp`` and replace-one adjacency the noise multiplier is halved: the RDP accountant
    does not double the sensitivity for replace-one as the PLD accountant does.
    """
    if not entries:
        raise UsageError("the privacy ledger is empty: no DP round has been recorded")
    if any(e.mechanism == SKELLAM for e in entries):
        raise UsageError("Skellam rounds have no dp-accounting event (account them in RDP)")
    halve = rdp and _relation(entries) == REPLACE_ONE
    parts = [
        dpa.SelfComposedDpEvent(
            _event(e, e.noise_multiplier / 2 if halve else e.noise_multiplier), n
        )
        for e, n in runs(entries)
    ]
    return parts[0] if len(parts) == 1 else dpa.ComposedDpEvent(parts)


def epsilon(entries: Sequence[LedgerEntry], delta: float, method: str = PLD) -> float | None:
    """Return epsilon at ``delta`` for the composed ledger; inf if some round had no noise.

    Returns None when ``method`` cannot account this ledger (RDP with replace-one and Poisson
    sampling has no amplification theorem in dp-accounting).
    """
    delta = check_delta(delta)
    if method not in METHODS:
        raise UsageError(f"unknown accounting method {method!r} (use {' or '.join(METHODS)})")
    if not entries:
        raise UsageError("the privacy ledger is empty: no DP round has been recorded")
    relation = _relation(entries)
    sampled_replace = relation == REPLACE_ONE and any(e.sampling_rate < 1 for e in entries)
    if any(e.mechanism == SKELLAM for e in entries):
        if method == PLD or sampled_replace:
            return None
        return _skellam_epsilon(entries, delta, relation)
    if any(e.noise_multiplier == 0 for e in entries):
        return math.inf
    if method == PLD:
        return _pld_epsilon(entries, delta, relation)
    if sampled_replace:
        return None
    accountant = dpa.rdp.RdpAccountant()
    accountant.compose(ledger_event(entries, rdp=True))
    return float(accountant.get_epsilon(delta))


def _skellam_epsilon(entries: Sequence[LedgerEntry], delta: float, relation: str) -> float:
    """RDP composition of a distributed-DP ledger (every round Skellam).

    Replacing one client's data moves its encoded vector by up to twice its bound, so
    replace-one doubles both sensitivities.
    """
    if any(e.mechanism != SKELLAM for e in entries):
        raise UsageError("the ledger mixes Skellam and Gaussian rounds; cannot compose")
    factor = 2.0 if relation == REPLACE_ONE else 1.0
    total = None
    for entry, count in runs(entries):
        l2 = factor * entry.l2_sensitivity
        curve = count * skellam_curve(
            l2=l2,
            l1=factor * entry.l1_sensitivity,
            variance=(entry.noise_multiplier * entry.l2_sensitivity) ** 2,
            rate=entry.sampling_rate,
        )
        total = curve if total is None else total + curve
    assert total is not None
    return rdp_epsilon(total, delta)


def _pld_epsilon(entries: Sequence[LedgerEntry], delta: float, relation: str) -> float:
    """PLD composition of the ledger's runs, built directly rather than via PLDAccountant.

    Same distributions as the accountant (pessimistic, connect-the-dots), but with the
    per-event probability mass below e^-30 truncated instead of e^-50: the truncated mass is
    counted as privacy failure (it goes to the infinite-loss bucket), so the bound stays valid,
    epsilon moves by about 1e-10 at delta 1e-5, and building the event's PLD takes half as long.
    """
    neighbours = (
        dpa.NeighboringRelation.ADD_OR_REMOVE_ONE
        if relation == ADD_REMOVE
        else dpa.NeighboringRelation.REPLACE_ONE
    )
    total: Any = None
    for entry, count in runs(entries):
        pld = pld_lib.from_gaussian_mechanism(
            entry.noise_multiplier,
            sampling_prob=min(entry.sampling_rate, 1.0),
            value_discretization_interval=PLD_DISCRETIZATION,
            log_mass_truncation_bound=LOG_MASS_TRUNCATION,
            neighboring_relation=neighbours,
        )
        if count > 1:
            pld = pld.self_compose(count)
        total = pld if total is None else total.compose(pld)
    return float(total.get_epsilon_for_delta(delta))


def epsilon_curve(
    entries: Sequence[LedgerEntry], delta: float, *, points: int = 20, method: str = RDP
) -> list[tuple[int, float]]:
    """Return ``(round, epsilon)`` after about ``points`` evenly spaced prefixes of the ledger.

    RDP by default: a curve of 20 PLD compositions would take seconds, and the plot is a trend.
    """
    if not entries:
        raise UsageError("the privacy ledger is empty: no DP round has been recorded")
    count = len(entries)
    cuts = sorted({max(1, round(count * (i + 1) / points)) for i in range(points)})
    curve = []
    for cut in cuts:
        value = epsilon(entries[:cut], delta, method)
        curve.append((entries[cut - 1].round, math.nan if value is None else value))
    return curve


@dataclass(frozen=True)
class Plan:
    """A calibrated noise multiplier for a target (epsilon, delta) over a planned run."""

    noise_multiplier: float
    epsilon_pld: float
    epsilon_rdp: float | None
    delta: float
    sampling_rate: float
    rounds: int


# A plan may overshoot its target by this factor (the PLD search tolerance), not more.
PLAN_TOLERANCE = 1.01


def plan_noise(target_epsilon: float, delta: float, *, sampling_rate: float, rounds: int) -> Plan:
    """Return the smallest noise multiplier whose PLD epsilon after ``rounds`` is the target."""
    delta = check_delta(delta)
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise UsageError(f"--target-epsilon must be > 0, got {target_epsilon}")
    if not 0 < sampling_rate <= 1:
        raise UsageError(f"--sampling-rate must be in (0, 1], got {sampling_rate}")
    if rounds < 1:
        raise UsageError(f"--rounds must be >= 1, got {rounds}")

    def entries(z: float) -> list[LedgerEntry]:
        entry = LedgerEntry(1, "gaussian", z, 1.0, sampling_rate, 0, ADD_REMOVE, 0.0)
        return [entry] * rounds

    def make_event(z: float) -> Any:
        return ledger_event(entries(z))

    def make_accountant() -> Any:
        # The search runs on a 10x coarser grid (about 8x faster); the result is re-checked
        # on the fine one below, and the coarse grid errs on the pessimistic side.
        return dpa.pld.PLDAccountant(
            dpa.NeighboringRelation.ADD_OR_REMOVE_ONE,
            value_discretization_interval=10 * PLD_DISCRETIZATION,
        )

    # RDP is fast and looser, so its answer is an upper end for PLD's: bracket PLD's search
    # with it instead of letting the search probe tiny noise levels (slow PLDs, huge supports).
    try:
        z_rdp = float(
            dpa.calibrate_dp_mechanism(dpa.rdp.RdpAccountant, make_event, target_epsilon, delta)
        )
    except dpa.mechanism_calibration.NoBracketIntervalFoundError:
        raise UsageError(
            f"no noise multiplier reaches epsilon {target_epsilon:g} at delta {delta:g} over "
            f"{rounds} rounds (the search gave up past 2^30); aim higher or run fewer rounds"
        ) from None
    bracket = dpa.ExplicitBracketInterval(0.5 * z_rdp, z_rdp)
    z = float(
        dpa.calibrate_dp_mechanism(
            make_accountant, make_event, target_epsilon, delta, bracket, tol=1e-4 * z_rdp
        )
    )
    reached = epsilon(entries(z), delta, PLD)
    if reached is None or reached > target_epsilon * PLAN_TOLERANCE:
        # The PLD discretisation floors epsilon: below it no noise helps (defect 13).
        got = "infinite" if reached is None else f"{reached:.4g}"
        raise UsageError(
            f"cannot plan epsilon {target_epsilon:g}: the accountant's resolution stops at "
            f"epsilon {got} for {rounds} rounds at delta {delta:g}; aim higher"
        )
    return Plan(
        noise_multiplier=z,
        epsilon_pld=math.inf if reached is None else reached,
        epsilon_rdp=epsilon(entries(z), delta, RDP),
        delta=delta,
        sampling_rate=sampling_rate,
        rounds=rounds,
    )
