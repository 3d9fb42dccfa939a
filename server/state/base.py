"""The coordinator's state interface; every backend passes the same contract tests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from fedft.server.state.records import (
    ClientRecord,
    LedgerEntry,
    NewUpdate,
    RoundRecord,
    RunRecord,
    TaskRecord,
    TokenRecord,
    TrafficRecord,
    UpdateRecord,
)


class StateError(Exception):
    """Base class of state-layer refusals (not bugs)."""


class TokenError(StateError):
    """An enrollment token is unknown, already used or expired (the message says which)."""


class ClientExists(StateError):
    """A client with this id is already enrolled."""


class DuplicateUpdate(StateError):
    """The task already has an accepted update; the first one wins."""


class RoundClosed(StateError):
    """The round is not open (finished, or never started)."""


class State(ABC):
    """Durable coordinator state.

    Every mutating method is one transaction: when it returns, the change is durable (for the
    SQL backend: committed), and when it raises, nothing of it was written.
    """

    # --- run ---------------------------------------------------------------------------------
    @abstractmethod
    def initialize_run(self, run: RunRecord, initial_checkpoint: bytes) -> RunRecord:
        """Store the run and its round-0 checkpoint unless a run exists; return the stored run."""

    @abstractmethod
    def get_run(self) -> RunRecord | None:
        """Return the run, or None before :meth:`initialize_run`."""

    # --- enrollment ----------------------------------------------------------------------------
    @abstractmethod
    def add_token(self, token: TokenRecord) -> None:
        """Store a new enrollment token (by hash).

        Raises:
            StateError: a token with this hash exists already.
        """

    @abstractmethod
    def enroll(self, token_hash: str, client: ClientRecord, now: float) -> ClientRecord:
        """Consume a token and add the client atomically.

        Raises:
            TokenError: the token is unknown, used or expired.
            ClientExists: the client id is taken (the token stays unused).
        """

    @abstractmethod
    def list_tokens(self) -> list[TokenRecord]:
        """Return all tokens, oldest first."""

    # --- clients -------------------------------------------------------------------------------
    @abstractmethod
    def get_client(self, client_id: str) -> ClientRecord | None:
        """Return one client, or None."""

    @abstractmethod
    def list_clients(self) -> list[ClientRecord]:
        """Return all enrolled clients ordered by id."""

    @abstractmethod
    def touch_client(
        self,
        client_id: str,
        now: float,
        *,
        num_examples: int | None = None,
        properties: dict[str, object] | None = None,
    ) -> None:
        """Record that a client was seen, optionally with fresh example count and properties.

        ``properties``, when given, replace the stored ones.

        Raises:
            StateError: no client has this id.
        """

    # --- blobs ---------------------------------------------------------------------------------
    @abstractmethod
    def put_blob(self, data: bytes) -> str:
        """Store bytes under their SHA-256 hex digest (idempotent); return the digest."""

    @abstractmethod
    def get_blob(self, sha: str) -> bytes:
        """Return a blob; raises KeyError if absent."""

    # --- rounds and tasks ----------------------------------------------------------------------
    @abstractmethod
    def open_round(
        self, round_: RoundRecord, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Start a round with its tasks and their payload blobs, atomically.

        Rounds are numbered 1, 2, ... (round 0 is the initial checkpoint); ``round_`` must be
        open, and every task must belong to it, name an enrolled client, and have each of its
        payload blobs among ``blobs`` or stored already.

        Raises:
            StateError: the round number exists already or is not the next one, or a task is
                invalid (as above, or a duplicate task id).
        """

    @abstractmethod
    def add_tasks(
        self, round_number: int, tasks: Sequence[TaskRecord], blobs: Sequence[bytes]
    ) -> None:
        """Add tasks to open round ``round_number`` (``--mode async`` hands them out one by one).

        The same checks as :meth:`open_round`'s tasks, atomically.

        Raises:
            RoundClosed: the round is not open.
            StateError: a task is invalid.
        """

    @abstractmethod
    def extend_deadline(self, round_number: int, deadline: float) -> None:
        """Move an open round's deadline (used after a coordinator restart).

        Raises:
            RoundClosed: the round is not open.
        """

    @abstractmethod
    def get_round(self, round_number: int) -> RoundRecord | None:
        """Return one round, or None."""

    @abstractmethod
    def list_rounds(self) -> list[RoundRecord]:
        """Return all rounds in order."""

    @abstractmethod
    def get_task(self, task_id: str) -> TaskRecord | None:
        """Return one task, or None."""

    @abstractmethod
    def tasks_for_round(self, round_number: int) -> list[TaskRecord]:
        """Return a round's tasks ordered by client id."""

    # --- updates -------------------------------------------------------------------------------
    def add_update(self, update: UpdateRecord, data: bytes) -> None:
        """Store an accepted update and its payload atomically.

        Raises:
            RoundClosed: the update's round is not open.
            DuplicateUpdate: the task already has an update.
            StateError: the task is unknown, belongs to another client or to a round after
                ``update.round``, or ``update.payload_sha`` is not the SHA-256 of ``data``.
                (An update joins its task's round, or, under ``--mode async``, the round open
                when it arrives.)
        """
        (refusal,) = self.add_updates([NewUpdate(update, data)])
        if refusal is not None:
            raise refusal

    @abstractmethod
    def add_updates(self, items: Sequence[NewUpdate]) -> list[StateError | None]:
        """Store several updates (with their traffic records) in one transaction.

        Each item is checked as :meth:`add_update` checks it; the refused ones are skipped and
        their refusal returned at their index (None: stored). A later item for a task that an
        earlier one answered is a :class:`DuplicateUpdate`. When this returns, every item with
        None is durable; when it raises, none of them was stored.
        """

    @abstractmethod
    def updates_for_round(self, round_number: int) -> list[UpdateRecord]:
        """Return a round's updates in the order they were accepted."""

    @abstractmethod
    def close_round(
        self,
        round_number: int,
        now: float,
        metrics: dict[str, object],
        checkpoint: bytes,
        ledger: Sequence[LedgerEntry] = (),
    ) -> None:
        """Mark an open round done with its metrics and the strategy checkpoint, atomically.

        ``ledger`` entries (the round's privacy spending) are appended in the same transaction,
        so a released aggregate is never without its ledger entry, nor counted twice.

        Raises:
            RoundClosed: the round is not open.
        """

    @abstractmethod
    def latest_checkpoint(self) -> tuple[int, bytes]:
        """Return (round, checkpoint bytes) of the newest checkpoint (round 0 is the initial).

        Raises:
            StateError: there is no checkpoint yet (before :meth:`initialize_run`).
        """

    @abstractmethod
    def get_checkpoint(self, round_number: int) -> bytes:
        """Return the checkpoint stored when a round closed (0: the initial one).

        Raises:
            KeyError: the round has no checkpoint (it is open, or never existed).
        """

    # --- accounting ----------------------------------------------------------------------------
    @abstractmethod
    def add_traffic(self, record: TrafficRecord) -> None:
        """Record the serialized bytes of one exchange."""

    @abstractmethod
    def list_traffic(self, round_number: int | None = None) -> list[TrafficRecord]:
        """Return traffic records (of one round if given) in insertion order."""

    @abstractmethod
    def append_ledger(self, entry: LedgerEntry) -> None:
        """Append a privacy-ledger entry."""

    @abstractmethod
    def ledger(self) -> list[LedgerEntry]:
        """Return the privacy ledger in round order."""

    def close(self) -> None:  # noqa: B027 - optional hook; in-memory state has nothing to release
        """Release connections."""
