"""Admission primitives: token buckets, non-blocking slots, the watchdog that cuts silent calls."""

from __future__ import annotations

import threading

import pytest

from fedft.server.admission import AdmissionSettings, RateLimiter, Slots, Watchdog


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Call:
    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_token_bucket_refills_at_the_rate_and_hints_the_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=2.0, clock=clock)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # buckets are per client
    clock.now += 0.5
    assert limiter.take("a") == 0.0


def test_slots_refuse_past_the_limit_and_free_on_give() -> None:
    slots = Slots(2)
    assert slots.take(2)
    assert not slots.take()
    slots.give()
    assert slots.take()


def test_the_watchdog_cancels_a_silent_call_and_spares_a_finished_one() -> None:
    dog = Watchdog()
    try:
        silent, finished = Call(), Call()
        done = dog.watch(finished, idle_s=0.2, max_s=10.0)
        done.done = True  # the call ended before its deadline came due
        watched = dog.watch(silent, idle_s=0.5, max_s=10.0)
        assert silent.cancelled.wait(10.0)
        assert watched.expired
        assert not finished.cancelled.is_set()
    finally:
        dog.stop()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        AdmissionSettings(max_unauthenticated=0)
    with pytest.raises(ValueError, match="positive"):
        AdmissionSettings(idle_s=0)
