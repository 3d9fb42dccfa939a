"""Group commit: concurrent callers share one durable write instead of paying one each."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class CommitFailed(Exception):
    """The write that held this caller's item failed: nothing of the item was stored."""


@dataclass(eq=False)
class _Slot(Generic[T, R]):
    item: T
    ready: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    outcome: R | None = None
    error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Runs ``write(items)`` for concurrent callers of :meth:`run`, many items per call.

    ``write`` stores a batch in one transaction and returns one outcome per item, in order;
    it returns only once the batch is durable, and raises if nothing was stored. There is no
    committer thread: a caller that arrives while no write runs becomes the leader, writes
    every item queued so far (its own included), hands each caller its outcome and passes the
    lead to the first caller still queued. Alone, a caller writes at once; under load, every
    caller that queued during one commit (and its fsync) shares the next one.
    """

    def __init__(self, write: Callable[[list[T]], Sequence[R]], *, max_batch: int = 256):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._write = write
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._leading = False

    def run(self, item: T) -> R:
        """Return ``item``'s outcome once the write that held it has returned.

        Raises:
            CommitFailed: that write raised (its exception is the cause); the item is not stored.
        """
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._leading
            self._leading = True
        if not lead:
            slot.ready.wait()  # set when a leader wrote our item, or passed the lead to us
        if not slot.done:
            self._lead()
        if slot.error is not None:
            raise CommitFailed(f"the commit failed: {slot.error}") from slot.error
        return slot.outcome  # type: ignore[return-value]  # set by the write, maybe None

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        error: BaseException | None = None
        outcomes: Sequence[R] = ()
        try:
            outcomes = self._write([slot.item for slot in batch])
            if len(outcomes) != len(batch):
                error = RuntimeError(f"write returned {len(outcomes)} outcomes for {len(batch)}")
        except Exception as exc:
            error = exc
        finally:
            # Also on KeyboardInterrupt and the like: no caller may be left waiting forever.
            stored = error is None and len(outcomes) == len(batch)
            for index, slot in enumerate(batch):
                if stored:
                    slot.outcome = outcomes[index]
                else:
                    slot.error = error or RuntimeError("the committing thread was interrupted")
                slot.done = True
            with self._lock:
                following = self._queue[0] if self._queue else None
                self._leading = following is not None
            for slot in batch:
                slot.ready.set()
            if following is not None:
                following.ready.set()  # not done: it leads the next batch
