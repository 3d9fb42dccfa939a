"""--memory-budget: sizes parse, the least-changing plan that fits is chosen, too small says so."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fedft.cli.main import main
from fedft.core.errors import UsageError
from fedft.runtime.memory_plan import (
    MIB,
    ModelShape,
    candidates,
    model_shape,
    parse_budget,
    plan_for_budget,
    return_freed_memory,
)
from fedft.runtime.models import ModelBundle

SMOLLM2 = ModelShape(layers=30, hidden=576, intermediate=1536, vocab=49152, tied=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5GiB", 3 << 29), ("800MiB", 800 * MIB), ("2G", 2 << 30), ("512m", 512 * MIB)],
)
def test_budgets_parse(text: str, expected: int) -> None:
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1G", "0", "1.5 GB RAM", ""])
def test_bad_budgets_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--memory-budget"):
        parse_budget(text)


@pytest.mark.parametrize(
    ("budget_mib", "quant", "checkpointing", "micro"),
    [
        (4096, "none", False, 8),  # everything fits: train as asked
        (2100, "none", False, 4),  # smaller micro-batches before anything else
        (1300, "none", True, 2),  # then checkpointing, still at full precision
        (1200, "nf4", False, 2),  # a quantized base only when full precision cannot fit
        (850, "nf4", True, 2),  # the measured 779 MiB configuration (docs/results.md)
    ],
)
def test_the_least_changing_plan_that_fits_is_chosen(
    budget_mib: int, quant: str, checkpointing: bool, micro: int
) -> None:
    plan = plan_for_budget(budget_mib * MIB, SMOLLM2, max_length=128)
    assert (plan.quant, plan.gradient_checkpointing, plan.micro_batch) == (
        quant,
        checkpointing,
        micro,
    )
    assert plan.estimate_bytes <= budget_mib * MIB
    earlier = candidates(SMOLLM2, 128)[: candidates(SMOLLM2, 128).index(plan)]
    assert all(p.estimate_bytes > budget_mib * MIB for p in earlier)


def test_estimates_shrink_with_every_lever() -> None:
    plans = {
        (p.quant, p.gradient_checkpointing, p.micro_batch): p for p in candidates(SMOLLM2, 128)
    }
    for quant in ("none", "nf4"):
        for ckpt in (False, True):
            sizes = [plans[quant, ckpt, m].estimate_bytes for m in (8, 4, 2, 1)]
            assert sizes == sorted(sizes, reverse=True)
        assert plans[quant, True, 8].estimate_bytes < plans[quant, False, 8].estimate_bytes
    assert plans["nf4", False, 8].estimate_bytes < plans["none", False, 8].estimate_bytes


def test_too_small_names_the_least_budget_that_works() -> None:
    with pytest.raises(UsageError, match=r"smallest plan needs about 796 MiB"):
        plan_for_budget(700 * MIB, SMOLLM2, max_length=128)


def test_shapes_come_from_llama_and_gpt2_configs(
    tiny_bundle: Callable[[], ModelBundle], tmp_path: Path
) -> None:
    tiny = model_shape(tiny_bundle().path)
    assert (tiny.layers, tiny.hidden) == (4, 64)
    (tmp_path / "config.json").write_text(
        json.dumps({"n_layer": 12, "n_embd": 768, "vocab_size": 50257})
    )
    assert model_shape(tmp_path) == ModelShape(12, 768, 3072, 50257, True)
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10}))
    with pytest.raises(UsageError, match="cannot read the model's shape"):
        model_shape(tmp_path)


def test_glibc_takes_the_mmap_threshold() -> None:
    assert return_freed_memory()  # these machines run glibc


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--memory-budget", "100MiB"], "smallest plan needs about"),
        (["--memory-budget", "2GiB", "--quant", "nf4"], "leave them out"),
        (["--memory-budget", "many"], "give a size"),
    ],
)
def test_client_budget_mistakes_are_one_line(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["client", "--server", "127.0.0.1:1", "--insecure", "--model", "tiny"]
    argv += ["--state-dir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert message in err[0]


def test_a_budget_sets_the_clients_training_flags(tmp_path: Path) -> None:
    from fedft.cli.client_cmd import memory_plan_from_args
    from fedft.cli.main import build_parser

    argv = ["client", "--server", "h:1", "--model", "tiny", "--memory-budget", "600MiB"]
    args = build_parser().parse_args(argv)
    budget_mib, line = memory_plan_from_args(args)
    assert budget_mib == 600
    # The tiny model's weights are small: only the runtime and margin count, any plan fits.
    assert (args.quant, args.gradient_checkpointing, args.micro_batch) == ("none", False, 8)
    assert line.startswith("memory budget 600 MiB: --quant none")
