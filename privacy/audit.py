"""One audit of a run: analytical epsilon from the ledger, empirical epsilon from its canaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedft.core.errors import UsageError
from fedft.privacy.accounting import PLD, RDP, check_delta, epsilon, epsilon_curve
from fedft.privacy.calibrated import headline, verdict
from fedft.privacy.canaries import CanaryRecord
from fedft.privacy.empirical import (
    EXACT_NULL_BELOW,
    epsilon_estimate,
    epsilon_lower_bound,
    epsilon_two_gaussians,
    epsilon_two_gaussians_many,
)
from fedft.privacy.ledger import LedgerEntry

# Resamples of the seen cosines for the paper estimate's percentile bootstrap interval.
BOOTSTRAP = 200


@dataclass(frozen=True)
class AuditInput:
    """What a run leaves for the audit: its ledger and, if it had canaries, their record."""

    ledger: list[LedgerEntry]
    canaries: CanaryRecord | None
    source: str
    # How clients were sampled: "secret" (CSPRNG) or "seeded" (reproducible, not secret).
    sampling: str = "seeded"


def empirical(
    record: CanaryRecord,
    delta: float,
    *,
    alpha: float = 0.05,
    every_round: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """The one-shot estimate from the final model delta: calibrated headline, paper's, bound.

    ``every_round`` says every inserted canary took part in every round (sampling rate 1);
    see :mod:`fedft.privacy.calibrated` for what that corrects.
    """
    if record.plan.seen < 2:
        raise UsageError("the empirical estimate needs at least 2 inserted canaries")
    seen_t, unseen_t = record.final_cosines()
    seen, unseen = seen_t.numpy(), unseen_t.numpy()
    dim = int(record.delta.numel())
    best = headline(seen, dim, delta, every_round=every_round, seed=seed)
    mean, std = float(seen.mean()), float(seen.std(ddof=1))
    out: dict[str, Any] = {
        "epsilon": best.epsilon,
        "ci95": [best.low, best.high],
        "estimator": best.method,
        "mu": best.mu,
        "mu_ci95": [best.mu_low, best.mu_high],
        "seen_variance_ratio": best.variance_ratio,
        "equal_variance_p": best.variance_p,
        "canaries_to_halve_interval": best.canaries_to_halve,
        **_paper_estimate(seen, dim, delta, seed),
        "dim": dim,
        "canaries_seen": int(seen.size),
        "canaries_unseen": int(unseen.size),
        "seen_mean_sqrt_d": mean * math.sqrt(dim),
        "seen_std_sqrt_d": std * math.sqrt(dim),
        "seen_cosines": seen.tolist(),
        "unseen_cosines": unseen.tolist(),
    }
    if unseen.size >= 2:
        out["lower_bound"] = epsilon_lower_bound(seen, unseen, alpha, delta)
        out["lower_bound_confidence"] = 1 - alpha
    if record.max_cosines is not None and unseen.size >= 2:
        max_cos = record.max_cosines.numpy()
        max_seen, max_unseen = max_cos[: seen.size], max_cos[seen.size :]
        out["all_iterates_epsilon"] = epsilon_two_gaussians(
            float(max_unseen.mean()),
            float(max_unseen.std(ddof=1)),
            float(max_seen.mean()),
            float(max_seen.std(ddof=1)),
            delta,
        )
    return out


def _paper_estimate(
    seen: npt.NDArray[np.float64],
    dim: int,
    delta: float,
    seed: int,
) -> dict[str, Any]:
    """Andrew et al.'s estimate (null vs fitted two-Gaussian) and its percentile bootstrap.

    Kept beside the headline for comparison with the paper; biased upwards at small delta with
    a few hundred canaries (see :mod:`fedft.privacy.calibrated`).
    """
    rng = np.random.default_rng(seed)
    samples = rng.choice(seen, size=(BOOTSTRAP, seen.size), replace=True)
    means, stds = samples.mean(axis=1), samples.std(axis=1, ddof=1)
    mean, std = float(seen.mean()), float(seen.std(ddof=1))
    if dim >= EXACT_NULL_BELOW:
        # In null units; epsilon does not change under an affine map of the outcome.
        root = math.sqrt(dim)
        estimate = float(epsilon_two_gaussians_many(0.0, 1.0, mean * root, std * root, delta))
        boots = epsilon_two_gaussians_many(0.0, 1.0, means * root, stds * root, delta)
    else:
        estimate = epsilon_estimate(mean, std, dim, delta)
        boots = np.array(
            [epsilon_estimate(m, s, dim, delta) for m, s in zip(means, stds, strict=True)]
        )
    low, high = np.percentile(boots, [2.5, 97.5])
    return {
        "epsilon_paper_two_gaussian": estimate,
        "epsilon_paper_two_gaussian_bootstrap_ci95": [float(low), float(high)],
    }


def per_round(entries: Sequence[LedgerEntry]) -> list[dict[str, Any]]:
    """Noise, clip, sampling and participants of each round."""
    return [
        {
            "round": e.round,
            "noise_multiplier": e.noise_multiplier,
            "clip_norm": e.clip_norm,
            "sampling_rate": e.sampling_rate,
            "participants": e.participants,
            "aggregation": e.aggregation,
            "mechanism": e.mechanism,
        }
        for e in entries
    ]


def audit(data: AuditInput, delta: float, *, alpha: float = 0.05) -> dict[str, Any]:
    """Return the audit as plain values (what ``audit.json`` holds)."""
    delta = check_delta(delta)
    if not 0 < alpha < 0.5:
        raise UsageError(f"alpha must be in (0, 0.5), got {alpha}")
    if not data.ledger:
        raise UsageError(f"the privacy ledger of {data.source} is empty: no DP round recorded")
    adjacency = data.ledger[0].adjacency
    pld = epsilon(data.ledger, delta, PLD)
    rdp = epsilon(data.ledger, delta, RDP)
    result: dict[str, Any] = {
        "source": data.source,
        "delta": delta,
        "rounds": len(data.ledger),
        "adjacency": adjacency,
        "sampling": data.sampling,
        "epsilon_pld": pld,
        "epsilon_rdp": rdp,
        # PLD where dp-accounting has it; distributed DP's Skellam rounds have only RDP.
        "epsilon": pld if pld is not None else rdp,
        "accountant": PLD if pld is not None else RDP,
        "epsilon_curve": [
            {"round": r, "epsilon_rdp": e} for r, e in epsilon_curve(data.ledger, delta)
        ],
        "per_round": per_round(data.ledger),
        "epsilon_empirical": None,
        "verdict": None,
    }
    if data.canaries is not None and data.canaries.plan.seen >= 2:
        every_round = all(e.sampling_rate >= 1.0 for e in data.ledger)
        emp = empirical(data.canaries, delta, alpha=alpha, every_round=every_round)
        result["epsilon_empirical"] = emp
        result["verdict"] = verdict(emp["ci95"][0], emp["ci95"][1], result["epsilon"])
    return result
