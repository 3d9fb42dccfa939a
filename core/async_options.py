"""The settings of asynchronous buffered aggregation (``--mode async``), free of torch.

Kept apart from :mod:`fedft.strategies.buffered`, which drives a strategy with them, so that
the command line and the specs that validate these flags do not import torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedft.core.errors import UsageError

MODES = ("sync", "async")
DEFAULT_BUFFER = 4
DEFAULT_MAX_STALENESS = 8


def staleness_weight(staleness: int) -> float:
    """FedBuff's discount of an update ``staleness`` versions old: ``1 / sqrt(1 + staleness)``."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return 1.0 / math.sqrt(1.0 + staleness)


@dataclass(frozen=True)
class AsyncSettings:
    """How an asynchronous run aggregates: buffer size, staleness cap, clients at work."""

    buffer: int = DEFAULT_BUFFER
    max_staleness: int = DEFAULT_MAX_STALENESS
    # Clients training at once; 0: as many as a synchronous round of the strategy samples.
    concurrency: int = 0

    def __post_init__(self) -> None:
        if self.buffer < 1:
            raise UsageError(f"--buffer must be >= 1, got {self.buffer}")
        if self.max_staleness < 0:
            raise UsageError(f"--max-staleness must be >= 0, got {self.max_staleness}")
        if self.concurrency < 0:
            raise UsageError(f"--concurrency must be >= 0, got {self.concurrency}")


def wrapper_refusal(*, dp: bool, robust: bool, participation: str) -> str | None:
    """Why ``--mode async`` cannot run with these server wrappers (None: it can)."""
    if dp:
        return (
            "--mode async does not combine with --dp-* (the accountant counts synchronous rounds)"
        )
    if robust:
        return "--mode async does not combine with --robust"
    if participation != "none":
        return "--mode async does not combine with --participation (FedAU counts rounds of absence)"
    return None
