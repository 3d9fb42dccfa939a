"""``--batch-clients``: sampled clients trained together give the sequential run's losses."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fedft.core.errors import UsageError
from fedft.core.layout import A_SUFFIX, B_SUFFIX
from fedft.core.payload import Payload
from fedft.core.trainer import LoraSpec
from fedft.runtime.data import Example
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer
from fedft.simulation.batched_clients import DeferredTrainer, run_together
from fedft.simulation.console import run_with_progress
from fedft.simulation.spec import SimulationSpec

FULL = LoraSpec(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))


def spec(out: Path, strategy: str, batch_clients: int, **overrides: Any) -> SimulationSpec:
    values: dict[str, Any] = {
        "strategy": strategy,
        "strategy_options": {"local_steps": 3, "batch_size": 4},
        "model": "tiny",
        "clients": 4,
        "rounds": 2,
        "seed": 3,
        "out": out,
        "rouge_examples": 0,
        "eval_examples": 16,
        "batch_clients": batch_clients,
    }
    values.update(overrides)
    return SimulationSpec(**values)


def _losses(folder: Path) -> tuple[list[float], list[float]]:
    data = json.loads((folder / "report.json").read_text())
    return (
        [r["eval_loss"] for r in data["rounds"]],
        [r["metrics"]["train_loss"] for r in data["rounds"]],
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "batch", "overrides"),
    [
        ("fedavg_lora", 4, {}),
        ("legend", 3, {"device_mix": "fast:2,slow:2"}),  # per-client depths and ranks
        ("hetlora", 4, {"device_mix": "fast:2,slow:2", "micro_batch": 3}),
    ],
)
def test_batched_clients_give_the_sequential_losses_and_adapter(
    tmp_path: Path, strategy: str, batch: int, overrides: dict[str, Any]
) -> None:
    one = run_with_progress(spec(tmp_path / "one", strategy, 1, **overrides), quiet=True)
    many = run_with_progress(spec(tmp_path / "many", strategy, batch, **overrides), quiet=True)
    eval_one, train_one = _losses(tmp_path / "one")
    eval_many, train_many = _losses(tmp_path / "many")
    assert eval_many == pytest.approx(eval_one, rel=1e-5)
    assert train_many == pytest.approx(train_one, rel=1e-5)
    assert many.rounds[-1].eval_loss < many.initial["eval_loss"]  # it trained
    adapter_one = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    adapter_many = load_file(tmp_path / "many" / "adapter" / "adapter_model.safetensors")
    assert adapter_one.keys() == adapter_many.keys()
    # Compare each module's B @ A: legend exports an SVD's factors, whose signs are arbitrary.
    a_names = [n for n in adapter_one if n.endswith(A_SUFFIX)]
    assert a_names
    for name in a_names:
        b_name = name.removesuffix(A_SUFFIX) + B_SUFFIX
        product_one = adapter_one[b_name] @ adapter_one[name]
        product_many = adapter_many[b_name] @ adapter_many[name]
        torch.testing.assert_close(product_many, product_one, rtol=1e-4, atol=1e-5)
    groups = sorted(c["batched_with"] for c in many.rounds[0].clients.values())
    assert groups == sorted([batch] * batch + [4 - batch] * (4 - batch))
    assert all("batched_with" not in c for c in one.rounds[0].clients.values())
    for record in many.rounds:
        for client, entry in record.clients.items():
            twin = one.rounds[record.round - 1].clients[client]
            assert (entry["lora_depth"], entry["ranks"]) == (twin["lora_depth"], twin["ranks"])


def test_batch_clients_needs_a_lora_strategy_and_the_inprocess_engine(tmp_path: Path) -> None:
    from fedft.simulation.engine import InProcessEngine

    with pytest.raises(UsageError, match="needs a LoRA strategy"):
        InProcessEngine(spec(tmp_path, "fedkseed", 2, strategy_options={}))
    with pytest.raises(UsageError, match="--engine inprocess"):
        spec(tmp_path, "fedavg_lora", 2, engine="grpc")
    with pytest.raises(UsageError, match="--batch-clients must be >= 1"):
        spec(tmp_path, "fedavg_lora", 0)


def test_cli_refuses_batching_a_seed_strategy_in_one_line(tmp_path: Path) -> None:
    argv = ["simulate", "--model", "tiny", "--strategy", "ferret", "--batch-clients", "4"]
    argv += ["--quiet", "--out", str(tmp_path / "o")]
    fedft = str(Path(sys.executable).with_name("fedft"))
    proc = subprocess.run([fedft, *argv], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("fedft: error: --batch-clients needs")
    assert "Traceback" not in proc.stderr


@pytest.fixture
def trainers(
    tiny_bundle: Callable[[], ModelBundle], chatterbot_examples: list[Example]
) -> list[LocalTrainer]:
    bundle = tiny_bundle()
    out = [LocalTrainer(bundle, chatterbot_examples[i::50][:8], max_length=32) for i in range(3)]
    out[0].add_lora(FULL)
    return out


def test_run_together_replies_in_order_and_raises_a_clients_error(
    trainers: list[LocalTrainer],
) -> None:
    start = trainers[0].lora_state()

    def trains(number: int) -> Callable[[Any], Payload]:
        def call(trainer: Any) -> Payload:
            assert isinstance(trainer, DeferredTrainer)
            trainer.load_lora_state(start)
            stats = trainer.train(steps=1, batch_size=2, lr=0.1, seed=number)
            return Payload(tensors=trainer.lora_state(), metrics={"n": number, "loss": stats.loss})

        return call

    def idle(trainer: Any) -> Payload:  # a task that never trains: it just answers
        return Payload(tensors=trainer.lora_state(), metrics={"n": -1})

    replies = run_together([trains(0), idle, trains(2)], trainers)
    assert [r.metrics["n"] for r in replies] == [0, -1, 2]
    assert all(torch.equal(replies[1].tensors[n], start[n]) for n in start)
    assert any(not torch.equal(replies[0].tensors[n], start[n]) for n in start)

    def broken(trainer: Any) -> Payload:
        raise RuntimeError("client 1 broke")

    with pytest.raises(RuntimeError, match="client 1 broke"):
        run_together([trains(0), broken, trains(2)], trainers)

    # A training error reaches every waiting client, then the engine.
    def wrong_names(trainer: Any) -> Payload:
        trainer.load_lora_state({"nope": torch.zeros(1)})
        trainer.train(steps=1, batch_size=2, lr=0.1, seed=0)
        return Payload()

    with pytest.raises(ValueError, match="adapter names differ"):
        run_together([trains(0), wrong_names], trainers[:2])
