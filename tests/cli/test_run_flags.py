"""The run flags declared once (fedft.cli.run_flags): rendered for serve and client, parsed back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fedft.cli.coordinator_setup import server_run_spec
from fedft.cli.main import build_parser
from fedft.cli.privacy_flags import local_dp_config_from_args
from fedft.cli.run_flags import client_flags, serve_flags
from fedft.privacy.config import SECRET, DPConfig, LocalDPConfig
from fedft.privacy.robust import RobustConfig
from fedft.privacy.secagg.settings import SecAggSettings
from fedft.runtime.spec import RunSpec
from fedft.simulation.cli import SHARED_FIELDS
from fedft.simulation.spec import SimulationSpec

# RunSpec fields each renderer carries: together, every field.
SERVE_FIELDS = {
    "strategy",
    "options",
    "model",
    "seed",
    "dp",
    "robust",
    "participation",
    "secagg",
}
CLIENT_FIELDS = {
    "model",
    "quant",
    "device",
    "max_length",
    "local_dp",
    "gradient_checkpointing",
    "micro_batch",
    "autocast",
}

DP = DPConfig(
    noise_multiplier=1.25,
    clip=0.5,
    adaptive=True,
    count_stddev=3.0,
    sampling_rate=0.5,
    canaries=12,
    all_iterates=True,
)
OPTIONS = {"rank": 4, "lr": 0.0025, "target_modules": ["q_proj", "v_proj"]}


def _serve(spec: RunSpec) -> RunSpec:
    argv = ["serve", *serve_flags(spec), "--db", "sqlite://", "--rounds", "1"]
    return server_run_spec(build_parser().parse_args(argv))


def test_every_run_setting_reaches_a_process_or_is_named_as_flagless() -> None:
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    assert fields == SERVE_FIELDS | CLIENT_FIELDS


@pytest.mark.parametrize(
    "wrappers",
    [
        {"dp": DP},
        {"robust": RobustConfig("norm", bound=0.75, trim=0.2)},
        {"robust": RobustConfig("trimmed", trim=0.25)},
        {"participation": "fedau"},
        {"secagg": SecAggSettings(neighbours=4, threshold=3, clip=0.5, ring_bits=64)},
        {"secagg": SecAggSettings()},
        {
            "secagg": SecAggSettings(),
            "dp": DPConfig(noise_multiplier=1.0, clip=0.05, distributed=True, min_survivors=5),
        },
        {},
    ],
    ids=[
        "dp",
        "robust-norm",
        "robust-trimmed",
        "fedau",
        "secagg",
        "secagg-defaults",
        "distributed-dp",
        "plain",
    ],
)
def test_serve_flags_parse_back_into_the_same_run(wrappers: dict[str, object]) -> None:
    spec = RunSpec(strategy="fedavg_lora", options=OPTIONS, model="tiny", seed=7, **wrappers)  # type: ignore[arg-type]
    back = _serve(spec)
    for name in SERVE_FIELDS - {"dp"}:
        assert getattr(back, name) == getattr(spec, name), name
    # A deployment draws its DP sample in secret; everything else is what was asked.
    expected = None if spec.dp is None else dataclasses.replace(spec.dp, sampling=SECRET)
    assert back.dp == expected


def test_a_distributed_dp_coordinator_waits_for_its_survivors() -> None:
    from fedft.cli.coordinator_setup import _fewest_clients

    dp = DPConfig(noise_multiplier=1.0, clip=0.05, distributed=True, min_survivors=5)
    secure = RunSpec(strategy="fedavg_lora", secagg=SecAggSettings())
    assert _fewest_clients(RunSpec(strategy="fedavg_lora")) == 1
    assert _fewest_clients(secure) == 2
    assert _fewest_clients(dataclasses.replace(secure, dp=dp)) == 5
    default = dataclasses.replace(dp, min_survivors=0)  # 70% of each round: at least 2
    assert _fewest_clients(dataclasses.replace(secure, dp=default)) == 2


def test_client_flags_parse_back_into_the_same_settings() -> None:
    spec = RunSpec(
        strategy="fedavg_lora",
        model="tiny",
        quant="nf4",
        device="cpu",
        max_length=96,
        gradient_checkpointing=True,
        micro_batch=2,
        autocast="bf16",
        local_dp=LocalDPConfig(clip=0.3, noise_multiplier=0.7),
    )
    argv = ["client", "--server", "127.0.0.1:1", "--insecure", "--data", "d.jsonl"]
    args = build_parser().parse_args([*argv, *client_flags(spec)])
    assert (args.model, args.quant, args.device, args.max_length) == ("tiny", "nf4", "cpu", 96)
    assert args.gradient_checkpointing
    assert args.micro_batch == 2
    assert args.autocast == "bf16"
    assert local_dp_config_from_args(args) == spec.local_dp
    plain = build_parser().parse_args([*argv, *client_flags(RunSpec(strategy="fedkseed"))])
    assert local_dp_config_from_args(plain) is None
    assert not plain.gradient_checkpointing
    assert plain.micro_batch is None
    assert plain.autocast == "none"


def test_simulate_defaults_are_the_specs() -> None:
    args = build_parser().parse_args(["simulate"])
    defaults = SimulationSpec()
    for name in SHARED_FIELDS:
        assert getattr(args, name) == getattr(defaults, name), name


def test_simulate_hands_checkpointing_to_the_assembly_point(tmp_path: Path) -> None:
    from fedft.simulation.cli import spec_from_args

    argv = ["simulate", "--model", "tiny", "--gradient-checkpointing", "--out", str(tmp_path)]
    spec = spec_from_args(build_parser().parse_args(argv))
    assert spec.run_spec().gradient_checkpointing
    assert "--gradient-checkpointing" in client_flags(spec.run_spec())
