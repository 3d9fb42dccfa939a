"""Where training runs: --device resolution, and (on a GPU) every engine training on CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.runtime.evaluation import generate_answers
from fedft.runtime.placement import describe_device, peak_memory_mb, resolve_device
from fedft.simulation.engine import InProcessEngine
from fedft.simulation.spec import SimulationSpec

HAS_CUDA = torch.cuda.is_available()


def test_auto_picks_cuda_only_when_there_is_one() -> None:
    assert resolve_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device(torch.device("cpu")) == "cpu"
    assert peak_memory_mb(torch.device("cpu")) is None


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:-1", "CPU", "mps"])
def test_misspelled_devices_are_usage_errors(name: str) -> None:
    with pytest.raises(UsageError, match="--device must be auto, cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_usage_error(name: str) -> None:
    with pytest.raises(UsageError, match=f"--device {name}: this machine has no CUDA GPU"):
        resolve_device(name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_a_gpu_index_past_the_last_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="there are only"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_cpu_runs_record_the_device(tmp_path: Path) -> None:
    spec = SimulationSpec(
        model="tiny", clients=2, rounds=1, seed=0, out=tmp_path, rouge_examples=0,
        eval_examples=8, device="cpu", strategy_options={"local_steps": 1, "batch_size": 2},
    )  # fmt: skip
    report = InProcessEngine(spec).run()
    assert report.device == "cpu"
    assert "peak_gpu_mb" not in report.final
    assert {c["device"] for r in report.rounds for c in r.clients.values()} == {"cpu"}


GPU_CASES = {
    "fedavg_lora": ({"local_steps": 3, "batch_size": 4}, {}),
    "fedavg_lora-nf4": ({"local_steps": 3, "batch_size": 4}, {"quant": "nf4"}),
    "fedkseed": ({"local_steps": 10, "seeds": 256, "lr": 5e-5}, {}),
    "fedkseed_pro": ({"local_steps": 10, "seeds": 256, "lr": 5e-5}, {}),
    "ferret": ({"local_steps": 3, "batch_size": 4, "lr": 1e-3}, {}),
    "legend": ({"local_steps": 3, "batch_size": 4}, {"device_mix": "fast:1,slow:1"}),
    "hetlora": ({"local_steps": 3, "batch_size": 4}, {"device_mix": "fast:1,slow:1"}),
}


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("case", sorted(GPU_CASES))
def test_every_strategy_trains_on_cuda_like_on_the_cpu(tmp_path: Path, case: str) -> None:
    options, extra = GPU_CASES[case]
    strategy = case.split("-", maxsplit=1)[0]

    def run(device: str) -> InProcessEngine:
        spec = SimulationSpec(
            strategy=strategy, strategy_options=dict(options), model="tiny", clients=2,
            rounds=2, seed=0, out=tmp_path / device, rouge_examples=0,
            eval_examples=16, device=device, **extra,
        )  # fmt: skip
        engine = InProcessEngine(spec)
        engine.run()
        return engine

    gpu = run("cuda")
    report = gpu.runtime
    assert gpu.bundle.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in gpu.bundle.model.parameters())
    cpu = run("cpu")
    gpu_rounds = [r.eval_loss for r in run_report(tmp_path / "cuda")]
    cpu_rounds = [r.eval_loss for r in run_report(tmp_path / "cpu")]
    # The same algorithm on another device: fp32 everywhere, so the losses agree closely.
    assert gpu_rounds == pytest.approx(cpu_rounds, rel=2e-3)
    data = run_report_json(tmp_path / "cuda")
    assert data["device"].startswith("cuda:0")
    assert data["final"]["peak_gpu_mb"] > 0
    assert report.device_name.startswith("cuda:0")
    assert cpu.bundle.device.type == "cpu"
    # Greedy generation (Rouge-L's input) runs on the model's device too.
    answers = generate_answers(gpu.bundle, ["hello there"], max_new_tokens=4)
    assert len(answers) == 1


def run_report(out: Path) -> list:  # type: ignore[type-arg]
    from fedft.simulation.report import read_report

    return read_report(out / "report.json").rounds


def run_report_json(out: Path) -> dict:  # type: ignore[type-arg]
    import json

    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]
