"""Read a coordinator's privacy ledger and canary record from its state for ``fedft audit``."""

from __future__ import annotations

from dataclasses import asdict

from fedft.core.errors import UsageError
from fedft.core.serde import payload_from_bytes
from fedft.privacy.audit import AuditInput
from fedft.privacy.ledger import LedgerEntry
from fedft.privacy.wrapper import canary_record_from_state, dp_settings_from_state
from fedft.server.state.base import State, StateError


def audit_input(state: State, source: str) -> AuditInput:
    """The ledger in round order plus the canary record of the newest checkpoint."""
    if state.get_run() is None:
        raise UsageError(f"{source} holds no run")
    entries = [LedgerEntry.from_dict(asdict(e)) for e in state.ledger()]
    try:
        _, checkpoint = state.latest_checkpoint()
    except StateError as exc:
        raise UsageError(f"{source}: {exc}") from None
    payload = payload_from_bytes(checkpoint)
    record = canary_record_from_state(payload)
    settings = dp_settings_from_state(payload)
    sampling = settings.sampling if settings is not None else "seeded"
    return AuditInput(entries, record, source, sampling)
