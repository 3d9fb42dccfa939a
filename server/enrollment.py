"""Who may take part: enrolled clients, their public keys, liveness and device profiles."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from fedft.core.identity import hash_token
from fedft.server import metrics as prom
from fedft.server.intake import Rejected
from fedft.server.state.base import ClientExists, State, TokenError
from fedft.server.state.records import ClientRecord

# fullmatch, not match with "$": "$" also matches before a final newline (defect 6).
CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
PUBLIC_KEY_BYTES = 32


class ClientDirectory:
    """Enrolls clients against one-time tokens and keeps their liveness and profiles current.

    ``changed`` is called after every enrollment and heartbeat: a round waiting for enough live
    clients may start.
    """

    def __init__(
        self,
        state: State,
        clock: Callable[[], float],
        liveness_s: float,
        changed: Callable[[], None],
    ):
        self.state = state
        self.clock = clock
        self.liveness_s = liveness_s
        self.changed = changed
        # Enrolled clients' public keys: the state offers no way to change or remove one.
        self._keys: dict[str, bytes] = {}
        # Reported example counts, kept current by enroll and heartbeat (every change passes
        # here), so capping an update's weight costs no database read.
        self._examples: dict[str, int] = {}

    def public_key(self, client_id: str) -> bytes | None:
        """Return the public key that verifies ``client_id``'s requests, if enrolled."""
        key = self._keys.get(client_id)
        if key is None:
            client = self.state.get_client(client_id)
            if client is None:
                return None  # not cached: the client may enroll later
            key = self._keys[client_id] = client.public_key
        return key

    def reported_examples(self, client_id: str) -> int:
        """The example count ``client_id``'s device last reported (0: none, or not enrolled)."""
        count = self._examples.get(client_id)
        if count is None:
            client = self.state.get_client(client_id)
            count = client.num_examples if client is not None else 0
            if client is not None:
                self._examples[client_id] = count
        return count

    def alive(self) -> list[ClientRecord]:
        """Return the clients seen within the liveness window."""
        horizon = self.clock() - self.liveness_s
        return [c for c in self.state.list_clients() if c.last_seen >= horizon]

    def enroll(
        self,
        token: str,
        public_key: bytes,
        requested_id: str = "",
        *,
        num_examples: int = 0,
        properties: dict[str, Any] | None = None,
    ) -> ClientRecord:
        """Exchange a one-time token and a public key for a client identity."""
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise Rejected("invalid", f"public key must be {PUBLIC_KEY_BYTES} raw Ed25519 bytes")
        client_id = requested_id or f"client-{secrets.token_hex(4)}"
        if not CLIENT_ID.fullmatch(client_id):
            raise Rejected("invalid", f"client id {client_id!r} must match {CLIENT_ID.pattern}")
        if num_examples < 0:
            raise Rejected("invalid", "num_examples must be >= 0")
        now = self.clock()
        record = ClientRecord(client_id, public_key, now, now, num_examples, dict(properties or {}))
        try:
            stored = self.state.enroll(hash_token(token), record, now)
        except TokenError as exc:
            prom.REJECTED.labels(reason="token").inc()
            raise Rejected("unauthenticated", str(exc)) from None
        except ClientExists:
            raise Rejected("exists", f"client id {client_id!r} is already enrolled") from None
        prom.ENROLLED.inc()
        self._examples[stored.client_id] = stored.num_examples
        self.changed()
        return stored

    def heartbeat(
        self,
        client_id: str,
        *,
        num_examples: int | None = None,
        properties: dict[str, Any] | None = None,
    ) -> None:
        """Record that a client is alive, with its latest profile."""
        if num_examples is not None and num_examples < 0:
            raise Rejected("invalid", "num_examples must be >= 0")
        self.state.touch_client(
            client_id, self.clock(), num_examples=num_examples, properties=properties
        )
        if num_examples is not None:
            self._examples[client_id] = num_examples
        self.changed()
