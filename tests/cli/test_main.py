"""The ``fedft`` command line: help that explains every flag, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedft.cli.main import build_parser, main

FEDFT = str(Path(sys.executable).with_name("fedft"))


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise AssertionError("no subcommands")


@pytest.mark.parametrize(
    "name", ["simulate", "strategies", "serve", "client", "status", "db", "certs", "token", "audit"]
)
def test_every_flag_is_explained(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = subcommand(name)
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for action in parser._actions:
        assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "simulate" in out
    assert "strategies" in out


def test_strategies_lists_fedavg_lora_and_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["strategies"]) == 0
    assert "fedavg_lora" in capsys.readouterr().out
    assert main(["strategies", "fedavg_lora"]) == 0
    out = capsys.readouterr().out
    assert "local_steps" in out
    assert "target_modules" in out


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDFT, *args], capture_output=True, text=True, timeout=300, check=False)


def bad_jsonl(tmp_path: Path) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "hi", "response": "hello"}\n{"prompt": "oops"\n')
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--model", "/no/such/model"], "does not exist"),
        (["--dataset", "BAD_JSONL"], "data.jsonl:2: malformed record"),
        (["--clients", "0"], "--clients must be >= 1"),
        (["--clients", "30", "--partition", "category"], "without examples"),
        (["--partition", "dirichlet:zero"], "ALPHA must be a number"),
        (["--opt", "bogus=1"], "has no option 'bogus'"),
        (["--opt", "lr=fast"], "cannot read 'fast' as float"),
        (["--opt", "lr=-1"], "lr must be > 0"),
        (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    args = [bad_jsonl(tmp_path) if a == "BAD_JSONL" else a for a in args]
    proc = run_cli("simulate", "--model", "tiny", "--quiet", "--out", str(tmp_path / "o"), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fedft: error:"), proc.stderr
    assert message in lines[-1]
    assert "Traceback" not in proc.stderr


def test_argparse_errors_also_exit_2() -> None:
    proc = run_cli("simulate", "--clients", "many")
    assert proc.returncode == 2
    assert "invalid int value" in proc.stderr


def test_building_the_parser_imports_no_heavy_library() -> None:
    """``fedft --help`` answers at once: torch, transformers and the gRPC stack load on use."""
    heavy = ("torch", "transformers", "grpc", "sqlalchemy", "scipy", "flwr")
    code = (
        "import sys; from fedft.cli.main import build_parser; build_parser(); "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["simulate", "client"])
def test_device_cuda_without_a_gpu_is_one_line(command: str, tmp_path: Path) -> None:
    args = ["--quiet", "--out", str(tmp_path / "o")] if command == "simulate" else []
    if command == "client":
        data = tmp_path / "d.jsonl"
        data.write_text('{"prompt": "hi", "response": "hello"}\n')
        args = ["--server", "127.0.0.1:1", "--insecure", "--data", str(data), "--model", "tiny"]
        args += ["--state-dir", str(tmp_path / "state")]
    proc = run_cli(command, "--model", "tiny", "--device", "cuda", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert (
        lines[-1] == "fedft: error: --device cuda: this machine has no CUDA GPU that torch can use"
    )
    assert "Traceback" not in proc.stderr
