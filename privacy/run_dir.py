"""A simulation's privacy records in its run folder: ``ledger.jsonl`` and ``canaries.bin``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from fedft.core.errors import ProtocolError, UsageError
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.privacy.canaries import CanaryRecord
from fedft.privacy.ledger import AUDIT_JSON, AUDIT_PNG, LEDGER_FILE, append_jsonl, read_jsonl
from fedft.privacy.wrapper import DPServer

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # the audit pulls in dp-accounting and scipy: a second runs without DP skip
    from fedft.privacy.audit import AuditInput

CANARIES_FILE = "canaries.bin"


class RunRecorder:
    """Appends each round's ledger entry and keeps the canary record current, after every round."""

    def __init__(self, folder: Path):
        self.folder = folder

    def start(self) -> None:
        """Forget the records of an earlier run in the same folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in (LEDGER_FILE, CANARIES_FILE, AUDIT_JSON, AUDIT_PNG):
            (self.folder / name).unlink(missing_ok=True)

    def after_round(self, server: DPServer) -> None:
        """Record the round ``server`` just aggregated."""
        if server.last_entry is not None:
            append_jsonl(self.folder / LEDGER_FILE, server.last_entry)
        record = server.canary_record()
        if record is not None:
            path = self.folder / CANARIES_FILE
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(payload_to_bytes(record.to_payload()))
            tmp.replace(path)


def load_run(folder: Path) -> AuditInput:
    """Read what :class:`RunRecorder` wrote."""
    from fedft.privacy.audit import AuditInput

    if not folder.is_dir():
        raise UsageError(f"--run {folder} is not a folder")
    ledger = read_jsonl(folder / LEDGER_FILE)
    canaries_path = folder / CANARIES_FILE
    record = None
    if canaries_path.is_file():
        try:
            record = CanaryRecord.from_payload(payload_from_bytes(canaries_path.read_bytes()))
        except (ValueError, KeyError, ProtocolError) as exc:
            raise UsageError(f"{canaries_path} is not a canary record: {exc}") from None
    return AuditInput(ledger, record, str(folder))


def audit_run_folder(
    folder: Path, delta: float = 1e-5, *, out: Path | None = None
) -> dict[str, object] | None:
    """Audit a run folder and write ``audit.json`` and ``audit.png`` (into ``out`` or itself).

    A run that released no round (every secure round failed, say) has nothing to audit:
    None, with a log line, instead of an error at the end of an otherwise finished run.
    """
    from fedft.privacy.audit import audit
    from fedft.privacy.report import write_json, write_png

    ledger = folder / LEDGER_FILE
    if not ledger.is_file() or not ledger.read_text(encoding="utf-8").strip():
        logger.warning("no round of this run was released: its privacy ledger is empty")
        return None
    result = audit(load_run(folder), delta)
    target = out or folder
    write_json(result, target)
    write_png(result, target)
    return result
