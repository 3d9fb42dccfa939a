"""The daemon's retry policy: exponential backoff with jitter, and the server's retry hint."""

from __future__ import annotations

import random

import grpc

from fedft.client.connection import RETRY_HEADER
from fedft.client.retry import Backoff, retry_hint


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(4.0, base_s=0.5, rng=random.Random(0))
    delays = [backoff.next_delay() for _ in range(8)]
    nominal = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for delay, cap in zip(delays, nominal, strict=True):
        assert cap / 2 <= delay <= cap
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_the_servers_retry_hint_is_read_from_the_trailers() -> None:
    class Refused(grpc.RpcError):
        def __init__(self, trailers: tuple[tuple[str, str], ...]) -> None:
            self._trailers = trailers

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return self._trailers

    assert retry_hint(Refused(((RETRY_HEADER, "1500"),))) == 1.5
    assert retry_hint(Refused(((RETRY_HEADER, "soon"),))) == 0.0
    assert retry_hint(Refused(())) == 0.0
