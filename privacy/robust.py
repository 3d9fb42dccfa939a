"""Robust aggregation around any strategy that exposes its update vectors (``LinearUpdates``).

A server-side wrapper like the DP one: it takes each accepted client's update vector and
replaces the strategy's example-weighted mean by a rule one malicious client cannot steer far:

- ``norm``: clip every vector to L2 norm ``bound`` and take the unweighted mean, so the global
  model moves by at most ``bound`` a round whatever one client sends;
- ``trimmed``: coordinate-wise mean after dropping the ``trim`` fraction of largest and
  smallest values (Yin et al. 2018), optionally after norm clipping;
- ``median``: coordinate-wise median, optionally after norm clipping.

Weights are ignored on purpose: a self-reported ``num_examples`` is itself an attack surface.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import Failure, Result, ServerStrategy
from fedft.core.wrapper import LinearWrapper, without_prefix

logger = logging.getLogger(__name__)

RULES = ("norm", "trimmed", "median")
PREFIX = "robust."
SETTINGS_KEY = PREFIX + "settings"


@dataclass(frozen=True)
class RobustConfig:
    """Which rule aggregates, the per-client norm bound (None: no clipping), the trim share."""

    rule: str
    bound: float | None = None
    trim: float = 0.1

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise UsageError(f"--robust must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.bound is not None and not (math.isfinite(self.bound) and self.bound > 0):
            raise UsageError(f"--robust-bound must be > 0, got {self.bound}")
        if self.rule == "norm" and self.bound is None:
            raise UsageError("--robust norm needs --robust-bound")
        if not 0 <= self.trim < 0.5:
            raise UsageError(f"--robust-trim must be in [0, 0.5), got {self.trim}")


def clip_to(vector: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale ``vector`` down to L2 norm ``bound`` if it is longer (non-finite: zeroed)."""
    norm = float(vector.norm())
    if not math.isfinite(norm):
        return torch.zeros_like(vector)
    return vector * (bound / norm) if norm > bound else vector


def combine(vectors: torch.Tensor, config: RobustConfig) -> torch.Tensor:
    """Aggregate a (clients, dim) float64 matrix by the configured rule."""
    if config.bound is not None:
        vectors = torch.stack([clip_to(v, config.bound) for v in vectors])
    if config.rule == "median":
        # torch.median takes the lower middle value; the mean of both middles is symmetric.
        return vectors.quantile(0.5, dim=0)
    if config.rule == "trimmed":
        n = vectors.shape[0]
        cut = min(math.floor(config.trim * n), (n - 1) // 2)
        ordered, _ = vectors.sort(dim=0)
        return ordered[cut : n - cut].mean(dim=0)
    return vectors.mean(dim=0)


class RobustServer(LinearWrapper):
    """Aggregates ``inner``'s accepted update vectors with a :class:`RobustConfig` rule."""

    wraps_as = "robust aggregation"

    def __init__(
        self, inner: ServerStrategy[Any], config: RobustConfig, *, seed: int, name: str = ""
    ):
        super().__init__(inner, seed=seed, name=name)
        self.robust = config

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Apply the robust aggregate of the valid results' update vectors."""
        vectors: list[torch.Tensor] = []
        rejected = 0
        for result in results:
            problem = self.inner.check_update(server_round, result)
            vector = None if problem else self.linear.update_vector(server_round, result)
            if vector is None:
                logger.warning("round %d: rejected %s: %s", server_round, result.client_id, problem)
                rejected += 1
                continue
            vectors.append(vector.to(torch.float64))
        metrics: dict[str, MetricValue] = {
            "accepted": len(vectors),
            "rejected": rejected,
            "failures": len(failures),
        }
        if vectors:
            step = combine(torch.stack(vectors), self.robust)
            metrics.update(self.linear.apply_update(server_round, step))
            metrics["robust.step_norm"] = float(step.norm())
        return metrics

    def state_dict(self) -> Payload:
        """The wrapped checkpoint plus the rule it aggregates with (``robust.settings``).

        A restarted coordinator reads the rule back (:func:`robust_from_state`), so a restart
        cannot silently change or drop it mid-run.
        """
        state = self.inner.state_dict()
        config = dict(state.config)
        config[SETTINGS_KEY] = json.dumps(dataclasses.asdict(self.robust), sort_keys=True)
        return Payload(tensors=dict(state.tensors), config=config, metrics=dict(state.metrics))

    def load_state_dict(self, state: Payload) -> None:
        """Restore the wrapped strategy from :meth:`state_dict` output."""
        self.inner.load_state_dict(without_prefix(state, PREFIX))


def robust_from_state(state: Payload) -> RobustConfig | None:
    """The robust rule a :class:`RobustServer` checkpoint was made with, or None."""
    text = state.config.get(SETTINGS_KEY)
    if not isinstance(text, str):
        return None
    return RobustConfig(**json.loads(text))
