"""``--secagg`` in the in-process engine: every round a real SecAgg+, the same model as without."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec

pytestmark = pytest.mark.slow

OPTIONS: dict[str, dict[str, Any]] = {
    "fedavg_lora": {"local_steps": 2, "rank": 2},
    "fedkseed": {"local_steps": 3, "seeds": 256},
    "fedkseed_pro": {"local_steps": 3, "seeds": 256},
    "ferret": {"local_steps": 2, "seeds": 8},
}


def spec(out: Path, strategy: str = "fedavg_lora", **overrides: Any) -> SimulationSpec:
    values: dict[str, Any] = {
        "model": "tiny",
        "strategy": strategy,
        "clients": 4,
        "rounds": 2,
        "seed": 0,
        "out": out,
        "rouge_examples": 0,
        "eval_examples": 8,
        "strategy_options": OPTIONS.get(strategy, {}),
    }
    values.update(overrides)
    return SimulationSpec(**values)


def run(s: SimulationSpec) -> tuple[InProcessEngine, Any]:
    engine = InProcessEngine(s)
    return engine, engine.run()


def flat_state(engine: InProcessEngine) -> torch.Tensor:
    tensors = engine.server_half.global_state().tensors
    return torch.cat([t.reshape(-1).to(torch.float64) for t in tensors.values()])


@pytest.mark.parametrize("strategy", sorted(OPTIONS))
def test_the_secure_sum_gives_the_plain_model(tmp_path: Path, strategy: str) -> None:
    plain, plain_report = run(spec(tmp_path / "plain", strategy, rounds=1))
    secure, report = run(spec(tmp_path / "secure", strategy, rounds=1, secagg=True))
    before, after = flat_state(plain), flat_state(secure)
    assert torch.count_nonzero(before) > 0
    (entry,) = report.rounds
    frac_bits = int(entry.metrics["secagg_frac_bits"])
    # The mean is off by under 2^-frac_bits per value (stochastic rounding); the strategy's
    # apply scales it by at most 10 (Ferret's server lr), and LoRA stores float32.
    bound = 10 * 2.0**-frac_bits + float(before.abs().max()) * 2.0**-23
    assert float((after - before).abs().max()) <= bound
    assert entry.metrics["accepted"] == entry.metrics["secagg_survivors"] == 4
    assert "train_loss" not in entry.metrics  # losses stay on the devices
    assert entry.eval_loss == pytest.approx(plain_report.rounds[0].eval_loss, abs=1e-5)
    for record in entry.clients.values():
        assert record["secagg_bytes"] > 0
        assert record["secagg_cpu"] >= 0
        assert record["secagg_clipped"] == 0
        assert record["bytes"] > record["secagg_bytes"]
    # Every byte of the four stages is in the round's traffic.
    assert entry.bytes_up + entry.bytes_down >= sum(
        r["secagg_bytes"] for r in entry.clients.values()
    )


def test_later_rounds_stay_on_the_plain_track(tmp_path: Path) -> None:
    _, plain = run(spec(tmp_path / "plain", "fedkseed", rounds=3))
    _, secure = run(spec(tmp_path / "secure", "fedkseed", rounds=3, secagg=True))
    for a, b in zip(plain.rounds, secure.rounds, strict=True):
        # From round 2 the clients train from models a few ulps apart: close, not equal.
        assert b.eval_loss == pytest.approx(a.eval_loss, abs=1e-4)


def test_a_round_of_one_fails_cleanly_and_the_next_runs(tmp_path: Path) -> None:
    # Seeded availability: with seed 0 some rounds reach one client, others several.
    _, report = run(spec(tmp_path, rounds=4, secagg=True, availability="markov:0.5,0.5"))
    sizes = [len(entry.clients) for entry in report.rounds]
    assert min(sizes) < 2 <= max(sizes), sizes
    previous = report.initial["eval_loss"]
    for entry in report.rounds:
        if len(entry.clients) < 2:
            assert entry.metrics["secagg_failed"] == 1
            assert entry.metrics["accepted"] == 0
            assert entry.eval_loss == previous  # nothing was applied
        else:
            assert entry.metrics["accepted"] == len(entry.clients)
            assert entry.eval_loss != previous
        previous = entry.eval_loss


def test_central_dp_noises_the_secure_sum(tmp_path: Path) -> None:
    # Without noise (z = 0) the released mean is the plain DP one: the devices clip their own
    # updates to the DP clip, the server divides the unmasked sum by the expected count.
    dp = {"dp_noise": 0.0, "dp_clip": 0.05}
    plain, _ = run(spec(tmp_path / "plain", rounds=1, **dp))
    secure, report = run(spec(tmp_path / "secure", rounds=1, secagg=True, **dp))
    (entry,) = report.rounds
    assert entry.metrics["dp.clip"] == 0.05
    assert entry.metrics["secagg_survivors"] == 4
    bits = int(entry.metrics["secagg_frac_bits"])
    diff = (flat_state(secure) - flat_state(plain)).abs().max()
    assert float(diff) <= 2.0**-bits + 1e-7
    assert torch.count_nonzero(flat_state(plain)) > 0
    lines = (tmp_path / "secure" / "ledger.jsonl").read_text().splitlines()
    (ledger,) = [json.loads(line) for line in lines]
    assert ledger["aggregation"] == "secagg"
    assert ledger["participants"] == 4
    plain_ledger = json.loads((tmp_path / "plain" / "ledger.jsonl").read_text())
    assert plain_ledger["aggregation"] == "plain"


def test_distributed_dp_the_devices_add_the_noise(tmp_path: Path) -> None:
    # z = 0: the signed decode gives central DP's mean; z = 1: the model moves by the noise
    # the devices promised, and no one added any at the server.
    plain, _ = run(spec(tmp_path / "plain", rounds=1, dp_noise=0.0, dp_clip=0.05))
    exact, report = run(
        spec(
            tmp_path / "z0", rounds=1, secagg=True, dp_distributed=True, dp_noise=0.0, dp_clip=0.05
        )
    )
    bits = int(report.rounds[0].metrics["secagg_frac_bits"])
    assert float((flat_state(exact) - flat_state(plain)).abs().max()) <= 2.0**-bits + 1e-7
    out = tmp_path / "z1"
    noisy, report = run(
        spec(out, rounds=1, secagg=True, dp_distributed=True, dp_noise=1.0, dp_clip=0.05)
    )
    metrics = report.rounds[0].metrics
    # 4 survivors of a noise calibrated for ceil(0.7 * 4) = 3: z * sqrt(4 / 3) on the sum.
    (ledger,) = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert ledger["mechanism"] == "skellam"
    assert ledger["aggregation"] == "secagg"
    assert ledger["noise_multiplier"] == pytest.approx((4 / 3) ** 0.5)
    assert ledger["l2_sensitivity"] >= 0.05 * 2.0 ** int(metrics["secagg_frac_bits"])
    assert float(metrics["dp.noise_std"]) >= 0.05 * (4 / 3) ** 0.5
    moved = flat_state(noisy) - flat_state(plain)
    # The mean divides the sum by the expected count (4); thousands of values: a tight check.
    assert float(moved.std()) == pytest.approx(float(metrics["dp.noise_std"]) / 4, rel=0.1)
    audit = json.loads((out / "audit.json").read_text())
    assert audit["accountant"] == "rdp"
    assert audit["epsilon_pld"] is None
    assert 0 < audit["epsilon"] == audit["epsilon_rdp"] < float("inf")


def test_distributed_dp_below_its_survivors_releases_nothing(tmp_path: Path) -> None:
    out = tmp_path / "few"
    _, report = run(
        spec(
            out,
            rounds=1,
            secagg=True,
            dp_distributed=True,
            dp_noise=1.0,
            dp_clip=0.05,
            dp_min_survivors=5,
        )
    )
    (entry,) = report.rounds
    assert entry.metrics["secagg_failed"] == 1
    assert not (out / "ledger.jsonl").exists() or not (out / "ledger.jsonl").read_text().strip()


@pytest.mark.parametrize("distributed", [False, True])
def test_canaries_keep_working_under_secagg(tmp_path: Path, distributed: bool) -> None:
    # Canaries are the server's own participants: inserted into the unmasked sum, audited.
    out = tmp_path / "canaries"
    _, report = run(
        spec(
            out,
            clients=3,
            secagg=True,
            dp_noise=1.0,
            dp_clip=0.05,
            canaries=20,
            dp_distributed=distributed,
            strategy_options={"local_steps": 2, "batch_size": 2, "rank": 2},
        )
    )
    assert [r.metrics["dp.canaries"] for r in report.rounds] == [20, 20]
    audit = json.loads((out / "audit.json").read_text())
    empirical = audit["epsilon_empirical"]
    assert (empirical["canaries_seen"], empirical["canaries_unseen"]) == (20, 20)
    assert [r["aggregation"] for r in audit["per_round"]] == ["secagg", "secagg"]
    assert [r["participants"] for r in audit["per_round"]] == [23, 23]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"strategy": "legend", "strategy_options": {}}, "per-device shapes"),
        ({"engine": "flower"}, "--engine inprocess or grpc"),
        ({"robust": "median"}, "--robust needs every update in the clear"),
        ({"dp_noise": 1.0, "dp_clip": 1.0, "dp_adaptive": True}, "--dp-adaptive"),
        ({"participation": "fedau"}, "fedau"),
        ({"mode": "async"}, "--mode sync"),
        ({"secagg_neighbours": 3}, "even"),
        ({"secagg_neighbours": 4, "secagg_threshold": 2}, r"must lie in \(2, 4\]"),
        ({"secagg_clip": 0.0}, "--secagg-clip"),
        ({"secagg_ring": 16}, "--secagg-ring"),
        ({"dp_noise": 1.0, "dp_clip": 1.0, "dp_min_survivors": 3}, "needs --dp-distributed"),
        (
            {"dp_noise": 1.0, "dp_clip": 1.0, "dp_distributed": True, "dp_min_survivors": 1},
            "--dp-min-survivors must be >= 2",
        ),
    ],
)
def test_refusals_are_one_line(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    values = {"secagg": True, **extra}
    strategy = values.pop("strategy", "fedavg_lora")
    with pytest.raises(UsageError, match=message):
        InProcessEngine(spec(tmp_path, strategy, **values))


def test_settings_without_secagg_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="need --secagg"):
        spec(tmp_path, secagg_neighbours=4)
    with pytest.raises(UsageError, match="--dp-distributed needs --secagg"):
        spec(tmp_path, dp_noise=1.0, dp_clip=1.0, dp_distributed=True)
