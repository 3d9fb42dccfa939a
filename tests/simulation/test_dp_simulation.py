"""A DP simulation with canaries on the tiny model leaves a ledger and a full audit."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting as dpa
import pytest

from fedft.cli.main import main
from fedft.core.errors import UsageError
from fedft.privacy.ledger import read_jsonl
from fedft.simulation.console import run_with_progress
from fedft.simulation.data_split import client_ids
from fedft.simulation.spec import SimulationSpec

pytestmark = pytest.mark.slow


def test_dp_run_writes_ledger_and_audit(tmp_path: Path) -> None:
    out = tmp_path / "dp"
    spec = SimulationSpec(
        model="tiny",
        clients=3,
        rounds=2,
        seed=0,
        out=out,
        rouge_examples=0,
        eval_examples=4,
        strategy_options={"local_steps": 2, "batch_size": 2},
        dp_noise=1.0,
        dp_clip=0.05,
        canaries=20,
        canary_iterates=True,
    )
    run_with_progress(spec, quiet=True)
    ledger = read_jsonl(out / "ledger.jsonl")
    assert [(e.round, e.noise_multiplier, e.clip_norm, e.participants) for e in ledger] == [
        (1, 1.0, 0.05, 23),
        (2, 1.0, 0.05, 23),
    ]
    audit = json.loads((out / "audit.json").read_text())
    # Two full-participation rounds of z = 1 are one Gaussian mechanism with sigma 1/sqrt(2).
    exact = dpa.get_epsilon_gaussian(2**-0.5, 1e-5)
    assert audit["epsilon_pld"] == pytest.approx(exact, rel=1e-3)
    assert audit["epsilon_rdp"] > audit["epsilon_pld"]
    empirical = audit["epsilon_empirical"]
    assert (empirical["canaries_seen"], empirical["canaries_unseen"]) == (20, 20)
    assert empirical["epsilon"] > 0
    assert empirical["all_iterates_epsilon"] >= 0
    assert (out / "audit.png").stat().st_size > 0
    # The same audit from the command line, with another delta, into another folder.
    assert main(["audit", "--run", str(out), "--delta", "1e-3", "--out", str(tmp_path / "a")]) == 0
    again = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert again["delta"] == 1e-3
    assert again["epsilon_pld"] < audit["epsilon_pld"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dp_clip": 1.0}, "needs --dp-noise"),
        ({"canaries": 5}, "needs --dp-noise"),
        ({"canary_iterates": True}, "needs --dp-noise"),
        ({"dp_noise": 1.0}, "needs --dp-clip"),
        ({"dp_noise": -1.0, "dp_clip": 1.0}, "--dp-noise must be >= 0"),
        ({"dp_noise": 1.0, "dp_clip": 1.0, "dp_sampling_rate": 0.0}, "sampling-rate"),
    ],
)
def test_bad_dp_flags_are_usage_errors(values: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SimulationSpec(model="tiny", **values)  # type: ignore[arg-type]


def test_client_side_dp_keeps_a_ledger_per_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "local-dp"
    spec = SimulationSpec(
        model="tiny",
        clients=3,
        rounds=2,
        seed=0,
        out=out,
        rouge_examples=0,
        eval_examples=4,
        strategy_options={"local_steps": 1, "batch_size": 2, "fraction": 0.5},
        local_dp_clip=0.1,
        local_dp_noise=2.0,
    )
    stale = out / "clients" / client_ids(3)[0] / "ledger.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"not": "this run"}\n')  # an earlier run's file must not count
    report = run_with_progress(spec, quiet=True)
    folders = sorted((out / "clients").iterdir())
    ledgers = {
        f.name: read_jsonl(f / "ledger.jsonl") for f in folders if (f / "ledger.jsonl").exists()
    }
    # Each round samples some clients; each sampled client recorded exactly that round.
    participants = {r.round: set(r.clients) for r in report.rounds}
    for cid, entries in ledgers.items():
        assert [e.round for e in entries] == [n for n, ids in participants.items() if cid in ids]
        assert {
            (e.noise_multiplier, e.clip_norm, e.sampling_rate, e.adjacency) for e in entries
        } == {(2.0, 0.1, 1.0, "replace-one")}
    worst = max(len(entries) for entries in ledgers.values())
    assert report.final["local_dp_releases"] == worst
    # k releases at noise z, replace-one (sensitivity 2C): one Gaussian at z / 2 / sqrt(k).
    exact = dpa.get_epsilon_gaussian(2.0 / 2 / worst**0.5, 1e-5)
    assert report.final["local_dp_epsilon"] == pytest.approx(exact, rel=1e-3)
    assert json.loads((out / "report.json").read_text())["final"]["local_dp_releases"] == worst
    # The worst-off client's folder audits on its own.
    name = next(n for n, entries in ledgers.items() if len(entries) == worst)
    assert main(["audit", "--run", str(out / "clients" / name)]) == 0
    audit = json.loads((out / "clients" / name / "audit.json").read_text())
    assert audit["epsilon_pld"] == pytest.approx(report.final["local_dp_epsilon"], rel=1e-6)
