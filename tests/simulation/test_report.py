"""Tests for fedft.simulation.report: the report.json schema and the report.png plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedft.simulation.report import Report, RoundReport, plot_report, read_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_report(rounds: int = 3) -> Report:
    report = Report(
        strategy="fedavg_lora",
        model="tiny",
        clients=4,
        seed=7,
        dataset="chatterbot",
        partition="dirichlet:0.5",
        engine="inprocess",
        config={"rank": 4, "target_modules": ["q_proj", "v_proj"], "lr": 0.001},
        initial={"eval_loss": 5.6},
    )
    for r in range(1, rounds + 1):
        report.rounds.append(
            RoundReport(
                round=r,
                eval_loss=5.6 - 0.3 * r,
                bytes_up=1000 * r,
                bytes_down=2000,
                participants=4,
                seconds=0.5 + r,
                metrics={"accepted": 4, "train_loss": 5.0 - 0.1 * r},
            )
        )
    report.final = {"eval_loss": 4.7, "rouge_l": 0.12, "bytes_total": report.bytes_total}
    return report


def test_bytes_total() -> None:
    assert make_report(0).bytes_total == 0
    assert make_report(3).bytes_total == (1000 + 2000) + (2000 + 2000) + (3000 + 2000)


def test_write_produces_the_documented_json(tmp_path: Path) -> None:
    report = make_report()
    out = tmp_path / "run" / "nested"
    path = report.write(out)
    assert path == out / "report.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("strategy", "model", "clients", "seed", "rounds", "final"):
        assert key in data
    assert data["strategy"] == "fedavg_lora"
    assert data["model"] == "tiny"
    assert data["clients"] == 4
    assert data["seed"] == 7
    assert data["partition"] == "dirichlet:0.5"
    assert data["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert data["initial"] == {"eval_loss": 5.6}
    assert len(data["rounds"]) == 3
    for i, record in enumerate(data["rounds"], start=1):
        for key in ("round", "eval_loss", "bytes_up", "bytes_down", "participants", "seconds"):
            assert key in record
        assert record["round"] == i
        assert isinstance(record["bytes_up"], int)
        assert isinstance(record["eval_loss"], float)
    assert data["rounds"][1]["metrics"] == {"accepted": 4, "train_loss": pytest.approx(4.8)}
    assert data["final"]["bytes_total"] == report.bytes_total
    assert data == report.to_json()
    # Only the report itself: the temp file was renamed away.
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]


def test_read_report_round_trips_including_nan(tmp_path: Path) -> None:
    report = make_report()
    report.rounds[1].eval_loss = math.nan  # written as null
    back = read_report(report.write(tmp_path))
    assert math.isnan(back.rounds[1].eval_loss)
    back.rounds[1].eval_loss = report.rounds[1].eval_loss = 0.0
    assert back == report


def test_write_replaces_an_earlier_report(tmp_path: Path) -> None:
    report = make_report(1)
    report.write(tmp_path)
    report.rounds.append(
        RoundReport(round=2, eval_loss=5.0, bytes_up=1, bytes_down=2, participants=1, seconds=0.1)
    )
    report.write(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    assert data["rounds"][1]["metrics"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


@pytest.mark.parametrize("rounds", [0, 1, 4])
def test_plot_report_writes_a_png(tmp_path: Path, rounds: int) -> None:
    import matplotlib.image

    path = plot_report(make_report(rounds), tmp_path / "report.png")
    assert path == tmp_path / "report.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
    image = matplotlib.image.imread(path)
    assert image.ndim >= 2
    # 10 x 4 inches at 120 dpi.
    assert image.shape[:2] == (480, 1200)
    # Not a blank canvas.
    assert float(image.std()) > 0.01


def test_plot_report_without_initial_loss(tmp_path: Path) -> None:
    report = make_report(2)
    report.initial = {}
    # The missing initial loss is a gap in the curve, not an error.
    path = plot_report(report, tmp_path / "plot.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000
