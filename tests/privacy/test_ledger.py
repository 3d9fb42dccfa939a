"""The privacy ledger: validation, JSON-lines round trip, grouping of equal rounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedft.core.errors import UsageError
from fedft.privacy.ledger import LedgerEntry, append_jsonl, read_jsonl, runs


def entry(round_: int, z: float = 1.0, q: float = 0.01, clip: float = 0.5) -> LedgerEntry:
    return LedgerEntry(round_, "gaussian", z, clip, q, 10, "add-remove", 1.0 + round_)


def test_jsonl_round_trip_in_round_order(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    for r in (2, 1, 3):
        append_jsonl(path, entry(r))
    assert read_jsonl(path) == [entry(1), entry(2), entry(3)]


def test_runs_group_consecutive_equal_costs_ignoring_clip() -> None:
    entries = [entry(1), entry(2, clip=0.9), entry(3, z=2.0), entry(4)]
    assert [n for _, n in runs(entries)] == [2, 1, 1]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("noise_multiplier", -1.0, "noise multiplier"),
        ("clip_norm", 0.0, "clip norm"),
        ("sampling_rate", 1.5, "sampling rate"),
        ("adjacency", "swap", "adjacency"),
        ("aggregation", "shuffled", "aggregation"),
        ("aggregation", 3, "aggregation"),
    ],
)
def test_bad_entries_are_usage_errors(field: str, value: object, message: str) -> None:
    values = entry(1).to_dict() | {field: value}
    with pytest.raises(UsageError, match=message):
        LedgerEntry.from_dict(values)


def test_missing_or_corrupt_ledger_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no privacy ledger"):
        read_jsonl(tmp_path / "absent.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"round": 1}\nnot json\n')
    with pytest.raises(UsageError, match="lacks"):
        read_jsonl(bad)


def test_an_older_ledger_without_aggregation_reads_as_plain(tmp_path: Path) -> None:
    values = entry(1).to_dict()
    del values["aggregation"]
    assert LedgerEntry.from_dict(values).aggregation == "plain"
    secure = LedgerEntry.from_dict(entry(2).to_dict() | {"aggregation": "secagg"})
    assert secure.aggregation == "secagg"
    path = tmp_path / "ledger.jsonl"
    append_jsonl(path, secure)
    assert read_jsonl(path) == [secure]
