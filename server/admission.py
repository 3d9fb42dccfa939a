"""Admission control: who may hold a server thread, for how long, and how often a client may call.

The coordinator serves gRPC from a bounded thread pool. A thread is cheap while it works and
expensive while it waits on a silent peer, so every call is bounded three ways before and while
it runs: a cap on calls not yet authenticated (strangers), a per-client token bucket, and a
server-side deadline that cancels a stream which stops sending (see docs/architecture.md).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Cancellable(Protocol):
    """What the watchdog needs of a call: a way to cancel it (grpc.RpcContext has one)."""

    def cancel(self) -> None:
        """Cancel the call."""


@dataclass(frozen=True)
class AdmissionSettings:
    """Limits on calls; the defaults suit a coordinator on a small machine facing the internet."""

    # Calls in the server at once, running or queued for a worker thread; past it gRPC
    # answers RESOURCE_EXHAUSTED at once. Large enough for a burst of honest clients to queue.
    max_calls: int = 4096
    # Enroll calls at once: the only call a stranger can make, and one that waits for a body.
    max_unauthenticated: int = 32
    # Seconds a call may wait for its first (or next) request message before it is cut.
    idle_s: float = 10.0
    # Seconds any call may last at most, however busy (a long poll plus a large transfer).
    max_call_s: float = 600.0
    # Calls one enrolled client may have in the server at once: without it, a client within
    # its rate could still hold many threads with silent streams until their deadlines.
    max_calls_per_client: int = 8
    # Token bucket per client: sustained calls per second and burst size.
    client_rate: float = 20.0
    client_burst: float = 40.0
    # Bytes of uploads buffered at once over the whole server.
    max_buffered_bytes: int = 2 << 30

    def __post_init__(self) -> None:
        if (
            self.max_calls < 1
            or self.max_unauthenticated < 1
            or self.client_burst < 1
            or self.max_buffered_bytes < 1
        ):
            raise ValueError("admission limits must be positive")
        if self.idle_s <= 0 or self.max_call_s <= 0 or self.client_rate <= 0:
            raise ValueError("admission times and rates must be positive")


@dataclass(eq=False)
class Deadline:
    """When a call is cut: ``idle`` after its last sign of life, or at ``hard`` whatever it does."""

    call: Cancellable
    idle_s: float
    hard: float
    at: float = 0.0
    expired: bool = False
    done: bool = False

    def touch(self, now: float) -> None:
        """The peer sent something: restart the idle clock."""
        self.at = min(now + self.idle_s, self.hard)


class Watchdog:
    """One thread that cancels calls whose :class:`Deadline` passed; O(log n) per registration."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="fedft-watchdog", daemon=True)
        self._thread.start()

    def watch(self, call: Cancellable, idle_s: float, max_s: float) -> Deadline:
        """Start watching ``call``; mark the returned deadline ``done`` when the call ends."""
        now = self._clock()
        deadline = Deadline(call, idle_s, now + max_s)
        deadline.touch(now)
        with self._cv:
            # Wake the thread only if this deadline comes before everything it waits for:
            # with one idle time for all calls that is rare, and a wake-up per call is costly.
            earliest = not self._heap or deadline.at < self._heap[0][0]
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if earliest:
                self._cv.notify()
        return deadline

    def touch(self, deadline: Deadline) -> None:
        """Record activity on a watched call (no heap work: re-checked when it comes due)."""
        deadline.touch(self._clock())

    def _run(self) -> None:
        with self._cv:
            while not self._stopped:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    _, _, deadline = heapq.heappop(self._heap)
                    if deadline.done:
                        continue
                    if deadline.at > now:  # touched since: wait for its new time
                        heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
                        continue
                    deadline.expired = True
                    deadline.call.cancel()
                wait = self._heap[0][0] - now if self._heap else 1.0
                self._cv.wait(min(max(wait, 0.001), 1.0))

    def stop(self) -> None:
        """End the watchdog thread."""
        with self._cv:
            self._stopped = True
            self._cv.notify()


class Slots:
    """A non-blocking counting cap: a caller over the cap is refused at once, never queued."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, amount: int = 1) -> bool:
        """Reserve ``amount``; False when that would pass the limit."""
        with self._lock:
            if self._used + amount > self._limit:
                return False
            self._used += amount
            return True

    def give(self, amount: int = 1) -> None:
        """Release what :meth:`take` reserved."""
        with self._lock:
            self._used -= amount

    @property
    def used(self) -> int:
        """How much is reserved now."""
        return self._used


class PerClientSlots:
    """A :class:`Slots`-like cap on calls in flight, counted per client id."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, client_id: str) -> bool:
        """Count one more call of ``client_id``; False when it has ``limit`` already."""
        with self._lock:
            used = self._used.get(client_id, 0)
            if used >= self._limit:
                return False
            self._used[client_id] = used + 1
            return True

    def give(self, client_id: str) -> None:
        """A call of ``client_id`` ended."""
        with self._lock:
            left = self._used[client_id] - 1
            if left:
                self._used[client_id] = left
            else:
                del self._used[client_id]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    """Token buckets by client id; :meth:`take` returns 0 or the seconds until a token is due."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, client_id: str) -> float:
        """Spend one token of ``client_id``'s bucket; return 0.0, or how long to wait for one."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(client_id)
            if bucket is None:
                bucket = self._buckets[client_id] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate
