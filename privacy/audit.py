"""One audit of a run: analytical epsilon from the ledger, empirical epsilon from its canaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedft.core.errors import UsageError
from fedft.privacy.accounting import PLD, RDP, check_delta, epsilon, epsilon_curve
from fedft.privacy.canaries import CanaryRecord
from fedft.privacy.empirical import (
    epsilon_estimate,
    epsilon_lower_bound,
    epsilon_two_gaussians,
    gdp_epsilon,
)
from fedft.privacy.ledger import LedgerEntry

# Resamples of the seen cosines for the estimate's bootstrap confidence interval.
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
    record: CanaryRecord, delta: float, *, alpha: float = 0.05, seed: int = 0
) -> dict[str, Any]:
    """The one-shot estimate from the final model delta, with a bootstrap interval and bound."""
    if record.plan.seen < 2:
        raise UsageError("the empirical estimate needs at least 2 inserted canaries")
    seen_t, unseen_t = record.final_cosines()
    seen, unseen = seen_t.numpy(), unseen_t.numpy()
    dim = int(record.delta.numel())
    mean, std = float(seen.mean()), float(seen.std(ddof=1))
    estimate = epsilon_estimate(mean, std, dim, delta)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(BOOTSTRAP):
        sample = rng.choice(seen, size=seen.size, replace=True)
        boots.append(epsilon_estimate(float(sample.mean()), float(sample.std(ddof=1)), dim, delta))
    low, high = np.percentile(np.array(boots), [2.5, 97.5])
    out: dict[str, Any] = {
        "epsilon": estimate,
        "ci95": [float(low), float(high)],
        # Equal-variance fit (mu-GDP with mu = sqrt(d) * mean): steadier than the two-Gaussian
        # estimate, whose fitted variance swings epsilon at small delta.
        "epsilon_gdp": gdp_epsilon(mean * math.sqrt(dim), delta),
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


def per_round(entries: Sequence[LedgerEntry]) -> list[dict[str, Any]]:
    """Noise, clip, sampling and participants of each round."""
    return [
        {
            "round": e.round,
            "noise_multiplier": e.noise_multiplier,
            "clip_norm": e.clip_norm,
            "sampling_rate": e.sampling_rate,
            "participants": e.participants,
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
    result: dict[str, Any] = {
        "source": data.source,
        "delta": delta,
        "rounds": len(data.ledger),
        "adjacency": adjacency,
        "sampling": data.sampling,
        "epsilon_pld": epsilon(data.ledger, delta, PLD),
        "epsilon_rdp": epsilon(data.ledger, delta, RDP),
        "epsilon_curve": [
            {"round": r, "epsilon_rdp": e} for r, e in epsilon_curve(data.ledger, delta)
        ],
        "per_round": per_round(data.ledger),
        "epsilon_empirical": None,
    }
    if data.canaries is not None and data.canaries.plan.seen >= 2:
        result["epsilon_empirical"] = empirical(data.canaries, delta, alpha=alpha)
    return result
