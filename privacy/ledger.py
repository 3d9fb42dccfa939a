"""The privacy ledger: one entry per released aggregate, stored as JSON lines or in a database."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fedft.core.errors import UsageError

GAUSSIAN = "gaussian"
# Distributed DP (--dp-distributed): each device added a share of Skellam noise in the ring.
SKELLAM = "skellam"
MECHANISMS = (GAUSSIAN, SKELLAM)
# Neighbouring datasets differ by one client added or removed (the DP-FedAvg convention and the
# one Poisson sampling amplification is proved for), or by one client's data replaced.
ADD_REMOVE = "add-remove"
REPLACE_ONE = "replace-one"
ADJACENCIES = (ADD_REMOVE, REPLACE_ONE)
LEDGER_FILE = "ledger.jsonl"
# The audit's outputs beside the ledger (fedft.privacy.report writes them).
AUDIT_JSON = "audit.json"
AUDIT_PNG = "audit.png"
# The JSON types each field accepts (an int is a valid float).
# How a round's clipped updates were summed: in the clear, or inside a SecAgg+ secure sum.
PLAIN = "plain"
SECAGG = "secagg"
AGGREGATIONS = (PLAIN, SECAGG)
_OPTIONAL = ("aggregation", "l2_sensitivity", "l1_sensitivity")  # an older ledger may lack
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,)}


@dataclass(frozen=True)
class LedgerEntry:
    """One round's release: what the accountant needs, plus what an operator wants to see.

    ``noise_multiplier`` is the noise standard deviation on the clipped sum divided by
    ``clip_norm``, so it alone (with the sampling rate) fixes the round's privacy cost.
    ``sampling_rate`` below 1 means every client was included independently with that
    probability (Poisson sampling); 1 means every available client took part.

    A ``skellam`` entry (distributed DP) is a sum of integers: ``l2_sensitivity`` and
    ``l1_sensitivity`` bound one client's encoded vector in ring units, and
    ``noise_multiplier`` is the survivors' summed noise std over ``l2_sensitivity``.
    """

    round: int
    mechanism: str
    noise_multiplier: float
    clip_norm: float
    sampling_rate: float
    participants: int
    adjacency: str
    recorded_at: float
    # How the clipped updates were summed: in the clear, or inside a secure sum (--secagg),
    # where ``participants`` is the round's realised survivors. The cost is the same.
    aggregation: str = PLAIN
    l2_sensitivity: float = 0.0  # skellam only
    l1_sensitivity: float = 0.0  # skellam only

    def __post_init__(self) -> None:
        problems = [
            (self.round >= 0, f"round must be >= 0, got {self.round}"),
            (self.mechanism in MECHANISMS, f"unknown mechanism {self.mechanism!r}"),
            (
                math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0,
                f"noise multiplier must be finite and >= 0, got {self.noise_multiplier}",
            ),
            (self.clip_norm > 0, f"clip norm must be > 0, got {self.clip_norm}"),
            (
                0 < self.sampling_rate <= 1,
                f"sampling rate must be in (0, 1], got {self.sampling_rate}",
            ),
            (self.participants >= 0, f"participants must be >= 0, got {self.participants}"),
            (self.adjacency in ADJACENCIES, f"unknown adjacency {self.adjacency!r}"),
            (
                self.aggregation in AGGREGATIONS,
                f"unknown aggregation {self.aggregation!r}",
            ),
            (
                self.mechanism != SKELLAM
                or (
                    math.isfinite(self.l2_sensitivity)
                    and self.l2_sensitivity > 0
                    and math.isfinite(self.l1_sensitivity)
                    and self.l1_sensitivity > 0
                ),
                "a skellam entry needs positive l2_sensitivity and l1_sensitivity",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise UsageError(f"privacy ledger: {message}")

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as plain JSON values."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LedgerEntry:
        """Build an entry from :meth:`to_dict` output (extra keys are ignored)."""
        names = [f.name for f in fields(cls) if f.name in values or f.name not in _OPTIONAL]
        missing = [n for n in names if n not in values]
        if missing:
            raise UsageError(f"privacy ledger entry lacks {', '.join(missing)}")
        for f in fields(cls):
            if f.name not in names:
                continue  # an older ledger, written before the field existed: its default
            value = values[f.name]
            # JSON gives strings, nulls and bools where numbers belong; say which (defect 13).
            expected = _FIELD_TYPES[str(f.type)]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise UsageError(
                    f"privacy ledger entry: {f.name} must be a {f.type!s}, got {value!r}"
                )
        return cls(**{n: values[n] for n in names})

    def accounting_key(self) -> tuple[str, float, float, str, float, float]:
        """What fixes this entry's privacy cost; equal keys compose as one self-composition."""
        return (
            self.mechanism,
            self.noise_multiplier,
            self.sampling_rate,
            self.adjacency,
            self.l2_sensitivity,
            self.l1_sensitivity,
        )


def append_jsonl(path: Path, entry: LedgerEntry) -> None:
    """Append one entry to a JSON-lines ledger, flushed to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry.to_dict(), sort_keys=True) + "\n")
        f.flush()


def write_jsonl(path: Path, entries: Iterable[LedgerEntry]) -> None:
    """Write a whole ledger (replacing the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "".join(json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries), encoding="utf-8"
    )
    tmp.replace(path)


def read_jsonl(path: Path) -> list[LedgerEntry]:
    """Read a JSON-lines ledger in round order; a bad line is a one-line error naming it."""
    if not path.is_file():
        raise UsageError(f"no privacy ledger at {path} (was the run made with DP enabled?)")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(values, dict):
            raise UsageError(f"{path}:{number}: expected a JSON object")
        entries.append(LedgerEntry.from_dict(values))
    return sorted(entries, key=lambda e: e.round)


def runs(entries: Sequence[LedgerEntry]) -> list[tuple[LedgerEntry, int]]:
    """Group consecutive entries with the same privacy cost: ``[(first entry, count), ...]``."""
    grouped: list[tuple[LedgerEntry, int]] = []
    for entry in entries:
        if grouped and grouped[-1][0].accounting_key() == entry.accounting_key():
            grouped[-1] = (grouped[-1][0], grouped[-1][1] + 1)
        else:
            grouped.append((entry, 1))
    return grouped
