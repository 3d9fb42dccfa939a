"""Uploads in flight: one per task, and a server-wide budget of bytes buffered at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from fedft.server.intake import reject


class Uploads:
    """Reserves an announced upload's size before any of its bytes are buffered.

    Per-stream size limits alone let one client open many streams for one task, each holding a
    full update in memory; here a task has at most one upload in flight and all uploads together
    never hold more than ``max_bytes`` (the header's announced size is reserved up front, and
    the reassembler refuses more than announced).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._tasks: set[str] = set()
        self._bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes reserved by uploads in flight."""
        return self._bytes

    @contextlib.contextmanager
    def hold(self, task_id: str, size: int) -> Iterator[None]:
        """Reserve ``size`` bytes for ``task_id``'s upload for the duration of the block."""
        reserved = max(size, 0)
        with self._lock:
            if task_id in self._tasks:
                raise reject("in_flight", "in_flight", f"task {task_id} already has an upload")
            if self._bytes + reserved > self.max_bytes:
                raise reject("busy", "busy", "the server is buffering too many uploads; retry")
            self._tasks.add(task_id)
            self._bytes += reserved
        try:
            yield
        finally:
            with self._lock:
                self._tasks.discard(task_id)
                self._bytes -= reserved
