"""A ``--secagg`` run's settings inside its durable checkpoint, so a restart keeps them."""

from __future__ import annotations

import dataclasses
import json

from fedft.core.payload import Payload

from .settings import SecAggSettings

STATE_PREFIX = "secagg."
_SETTINGS_KEY = "secagg.settings"

__all__ = ["STATE_PREFIX", "SecAggSettings", "secagg_from_state", "with_secagg_state"]


def with_secagg_state(state: Payload, settings: SecAggSettings) -> Payload:
    """``state`` plus the run's secure aggregation settings."""
    config = dict(state.config)
    config[_SETTINGS_KEY] = json.dumps(dataclasses.asdict(settings))
    return Payload(tensors=dict(state.tensors), config=config, metrics=dict(state.metrics))


def secagg_from_state(state: Payload) -> SecAggSettings | None:
    """The settings a checkpoint was taken with (None: a run without secure aggregation)."""
    text = state.config.get(_SETTINGS_KEY)
    if not isinstance(text, str):
        return None
    return SecAggSettings(**json.loads(text))
