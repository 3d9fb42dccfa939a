"""The simulation report: ``report.json`` (schema shared by every strategy) and ``report.png``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedft.core.payload import MetricValue


@dataclass
class RoundReport:
    """What one round did: global eval loss, bytes each way, participants, wall time."""

    round: int
    eval_loss: float
    bytes_up: int
    bytes_down: int
    participants: int
    seconds: float
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    # Per client: lora_depth, ranks (bottom to top), seconds, bytes, device and, if simulated,
    # its tier and CPU seconds.
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The clients reachable this round under --availability (None without it); the in-process
    # and Flower engines offered configure only these.
    available: list[str] | None = None


@dataclass
class Report:
    """A whole simulation run; written after every round so a crash loses nothing done."""

    strategy: str
    model: str
    clients: int
    seed: int
    dataset: str
    partition: str
    engine: str
    config: dict[str, Any]
    initial: dict[str, float] = field(default_factory=dict)
    rounds: list[RoundReport] = field(default_factory=list)
    final: dict[str, float | int | None] = field(default_factory=dict)
    # Model weight memory (--quant): scheme, quantized layers, bytes before/after, fraction saved.
    memory: dict[str, Any] = field(default_factory=dict)
    # Where the clients trained (--device), e.g. "cpu" or "cuda:0 (NVIDIA H200)".
    device: str = "cpu"
    # What reproduces the run: command, fedft version and commit, libraries, flags, hashes.
    provenance: dict[str, Any] = field(default_factory=dict)
    # --availability: the spec, each client's long-run probability and, if tied to the data,
    # each category's; --participation: "none" or "fedau".
    availability: dict[str, Any] = field(default_factory=dict)
    participation: str = "none"
    # "sync": one entry of rounds per round; "async" (FedBuff): one per applied buffer, its
    # seconds the virtual time since the previous version.
    mode: str = "sync"

    @property
    def bytes_total(self) -> int:
        """All bytes that crossed between server and clients so far."""
        return sum(r.bytes_up + r.bytes_down for r in self.rounds)

    def to_json(self) -> dict[str, Any]:
        """Return the report as plain JSON data."""
        return asdict(self)

    def write(self, out: Path) -> Path:
        """Atomically write ``report.json`` into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        target = out / "report.json"
        tmp = out / ".report.json.tmp"
        data = _json_safe(self.to_json())
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target


def read_report(path: Path) -> Report:
    """Load a ``report.json`` written by :meth:`Report.write` (NaN losses come back as NaN)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    rounds = [RoundReport(**r) for r in data.pop("rounds", [])]
    report = Report(**data, rounds=rounds)
    report.initial = {k: _from_json(v) for k, v in report.initial.items()}
    for record in report.rounds:
        record.eval_loss = _from_json(record.eval_loss)
    return report


def _from_json(value: Any) -> float:
    return math.nan if value is None else float(value)


def _json_safe(value: Any) -> Any:
    """Replace NaN/Inf (not valid JSON) by null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def plot_report(report: Report, path: Path) -> Path:
    """Draw eval loss and cumulative megabytes per round side by side into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [0] + [r.round for r in report.rounds]
    losses = [report.initial.get("eval_loss", float("nan"))] + [r.eval_loss for r in report.rounds]
    up, down = [0.0], [0.0]
    for r in report.rounds:
        up.append(up[-1] + r.bytes_up / 1e6)
        down.append(down[-1] + r.bytes_down / 1e6)

    fig, (ax_loss, ax_bytes) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    ax_loss.plot(rounds, losses, marker="o", color="tab:blue")
    ax_loss.set(xlabel="round (0 = initial model)", ylabel="held-out loss", title="Eval loss")
    ax_loss.grid(alpha=0.3)
    # Down and up are often equal (FedAvg sends the adapter both ways): draw down wide and pale
    # underneath so both stay visible.
    ax_bytes.plot(
        rounds, down, linewidth=5, alpha=0.45, label="down (server → clients)", color="tab:orange"
    )
    ax_bytes.plot(rounds, up, marker="s", label="up (clients → server)", color="tab:green")
    total = [u + d for u, d in zip(up, down, strict=True)]
    ax_bytes.plot(rounds, total, linestyle="--", label="total", color="tab:gray")
    ax_bytes.set(xlabel="round", ylabel="cumulative MB on the wire", title="Communication")
    ax_bytes.grid(alpha=0.3)
    ax_bytes.legend()
    for ax in (ax_loss, ax_bytes):
        ax.set_xticks(rounds)
    fig.suptitle(
        f"{report.strategy} · {report.model} · {report.clients} clients · "
        f"{report.partition} · seed {report.seed}"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
