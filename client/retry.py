"""How the daemon retries a call: which failures a later attempt can cure, and how long to wait."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

from fedft.client.connection import Connection

# Failures that a later attempt can cure: the coordinator restarting, a flaky link, overload.
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
}

T = TypeVar("T")


def retry_hint(error: grpc.RpcError) -> float:
    """Seconds the coordinator asked us to wait before retrying (0 when it did not say)."""
    from fedft.client.connection import RETRY_HEADER

    trailers = getattr(error, "trailing_metadata", None)  # absent on some RpcErrors
    value = dict((trailers() if trailers else None) or ()).get(RETRY_HEADER)
    return int(value) / 1000.0 if isinstance(value, str) and value.isdigit() else 0.0


class Backoff:
    """Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to a cap, randomised by half."""

    def __init__(self, cap_s: float, *, base_s: float = 0.5, rng: random.Random | None = None):
        self.cap_s = cap_s
        self.base_s = base_s
        self.attempt = 0
        self.rng = rng or random.Random()

    def next_delay(self) -> float:
        """Return the pause before the next attempt and count the attempt."""
        delay = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return float(delay * self.rng.uniform(0.5, 1.0))

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    connection: Connection,
    max_backoff_s: float,
    max_retries: int | None,
    stop: threading.Event,
    report: Callable[[str], None],
) -> T:
    """Call until it succeeds, backing off on transient failures; other errors propagate.

    A refused stamp (clock off, or the coordinator restarted) is resynced up to three times,
    apart from the backoff; a ``--max-retries`` limit counts the backoff's attempts only.
    """
    backoff = Backoff(max_backoff_s)
    resyncs = 0  # counted apart from the backoff: an outage before a restart uses that up
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            code = exc.code()
            resynced = code == grpc.StatusCode.UNAUTHENTICATED and connection.resync(exc)
            if resynced and resyncs < 3:
                # The connection adopted the server's clock; a new signature goes through.
                resyncs += 1
                continue
            if code not in RETRYABLE or (
                max_retries is not None and backoff.attempt >= max_retries
            ):
                raise
            delay = max(backoff.next_delay(), retry_hint(exc))
            report(f"{what}: coordinator unreachable ({code.name}); retrying in {delay:.1f} s")
            if stop.wait(delay):
                raise
        else:
            backoff.reset()
