"""What an edge client keeps on disk between restarts: identity, key and strategy state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedft.core.errors import UsageError
from fedft.core.identity import atomic_write, load_private_key, save_private_key
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes


@dataclass(frozen=True)
class Identity:
    """Who this client is to one coordinator."""

    client_id: str
    server: str
    key: Ed25519PrivateKey


class ClientStore:
    """A state folder: ``identity.json``, ``client.key`` (0600) and ``local_state.bin``.

    Every file is replaced atomically, so a crash or power loss leaves the old or the new
    version, never a torn one.
    """

    def __init__(self, folder: Path):
        self.folder = folder

    @property
    def _identity_file(self) -> Path:
        return self.folder / "identity.json"

    @property
    def _key_file(self) -> Path:
        return self.folder / "client.key"

    @property
    def _state_file(self) -> Path:
        return self.folder / "local_state.bin"

    def load_identity(self, server: str) -> Identity | None:
        """Return the stored identity, or None if this client never enrolled."""
        if not self._identity_file.exists():
            return None
        try:
            info = json.loads(self._identity_file.read_text(encoding="utf-8"))
            client_id, enrolled_with = str(info["client_id"]), str(info["server"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"{self._identity_file} is damaged ({exc}); delete it to re-enroll"
            ) from None
        if enrolled_with != server:
            raise UsageError(
                f"{self.folder} holds the identity {client_id!r} for {enrolled_with}, "
                f"not {server}; use another --state-dir for another coordinator"
            )
        return Identity(client_id, enrolled_with, load_private_key(self._key_file))

    def save_identity(self, identity: Identity) -> None:
        """Store the identity; the key first, so a stored id always has its key."""
        save_private_key(self._key_file, identity.key)
        record = {"client_id": identity.client_id, "server": identity.server}
        atomic_write(self._identity_file, json.dumps(record, indent=2).encode(), mode=0o600)

    def load_local_state(self) -> Payload:
        """Return the strategy's local state (empty before the first task)."""
        if not self._state_file.exists():
            return Payload()
        return payload_from_bytes(self._state_file.read_bytes())

    def save_local_state(self, state: Payload) -> None:
        """Persist the strategy's local state."""
        atomic_write(self._state_file, payload_to_bytes(state), mode=0o600)
