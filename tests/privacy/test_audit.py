"""The audit: result fields, audit.json/audit.png, the table, and the run-folder round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedft.cli.main import main
from fedft.core.errors import UsageError
from fedft.core.serde import payload_to_bytes
from fedft.privacy.audit import AuditInput, audit
from fedft.privacy.canaries import CanaryBank, CanaryPlan, CanaryRecord
from fedft.privacy.ledger import LEDGER_FILE, LedgerEntry, append_jsonl
from fedft.privacy.report import summary_table, warning, write_json, write_png
from fedft.privacy.run_dir import CANARIES_FILE, load_run

PLAN = CanaryPlan(seed=1, seen=30, unseen=30)
DIM = 3000


def ledger(z: float = 1.0) -> list[LedgerEntry]:
    return [LedgerEntry(r, "gaussian", z, 0.5, 1.0, 3, "add-remove", 0.0) for r in (1, 2, 3)]


def record(all_iterates: bool = False) -> CanaryRecord:
    bank = CanaryBank(PLAN, DIM)
    delta = sum((bank.vector(j) for j in range(PLAN.seen)), torch.zeros(DIM, dtype=torch.float64))
    delta = delta + torch.randn(
        DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    max_cos = bank.cosines(delta) if all_iterates else None
    return CanaryRecord(PLAN, delta, max_cos)


def test_audit_fields(tmp_path: Path) -> None:
    result = audit(AuditInput(ledger(), record(all_iterates=True), "test"), 1e-5)
    assert result["rounds"] == 3
    assert result["epsilon_pld"] < result["epsilon_rdp"]
    assert [p["noise_multiplier"] for p in result["per_round"]] == [1.0, 1.0, 1.0]
    emp = result["epsilon_empirical"]
    assert emp["canaries_seen"] == emp["canaries_unseen"] == 30
    assert emp["ci95"][0] <= emp["epsilon"] <= emp["ci95"][1]
    assert {"lower_bound", "epsilon_paper_two_gaussian", "all_iterates_epsilon"} <= set(emp)
    assert result["verdict"]["code"] in {"consistent", "below", "above"}
    assert summary_table(result).row_count >= 10
    data = json.loads(write_json(result, tmp_path).read_text())
    assert data["epsilon_empirical"]["dim"] == DIM
    assert write_png(result, tmp_path).stat().st_size > 10_000


def test_infinite_epsilon_is_written_as_a_string(tmp_path: Path) -> None:
    result = audit(AuditInput(ledger(z=0.0), None, "test"), 1e-5)
    assert json.loads(write_json(result, tmp_path).read_text())["epsilon_pld"] == "inf"
    assert result["epsilon_empirical"] is None


def test_bad_input() -> None:
    with pytest.raises(UsageError, match="empty"):
        audit(AuditInput([], None, "test"), 1e-5)
    with pytest.raises(UsageError, match="delta"):
        audit(AuditInput(ledger(), None, "test"), 1.0)


def test_run_folder_round_trip_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for entry in ledger():
        append_jsonl(tmp_path / LEDGER_FILE, entry)
    (tmp_path / CANARIES_FILE).write_bytes(payload_to_bytes(record().to_payload()))
    loaded = load_run(tmp_path)
    assert loaded.ledger == ledger()
    assert loaded.canaries is not None
    assert loaded.canaries.plan == PLAN
    assert main(["audit", "--run", str(tmp_path)]) == 0
    assert (tmp_path / "audit.json").is_file()
    assert (tmp_path / "audit.png").is_file()
    assert "epsilon, PLD" in capsys.readouterr().out
    assert main(["audit", "--run", str(tmp_path), "--delta", "2"]) == 2
    assert main(["audit", "--plan", "--target-epsilon", "3"]) == 2
    assert "--rounds" in capsys.readouterr().err


def test_an_estimate_above_the_ledger_is_a_loud_warning(tmp_path: Path) -> None:
    # The record's canaries carry far more signal than noise multiplier 50 allows.
    result = audit(AuditInput(ledger(z=50.0), record(), "test"), 1e-5)
    assert result["verdict"]["code"] == "above"
    loud = warning(result)
    assert loud is not None
    assert "ABOVE" in loud
    assert write_png(result, tmp_path).stat().st_size > 10_000
    assert warning(audit(AuditInput(ledger(), None, "test"), 1e-5)) is None
