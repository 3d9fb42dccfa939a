"""The lean install: an edge client runs without the server extra; server commands say so."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fedft.cli.extras import SERVER_MODULES
from fedft.core.identity import hash_token, new_token
from fedft.server.state.factory import open_state
from fedft.server.state.records import ROUND_DONE, TokenRecord

from .conftest import Processes, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Loaded at interpreter start through PYTHONPATH: the server extra's modules cannot be found, as
# if `pip install fedft` had been run without `[server]`. Every finder is wrapped to find nothing
# for them, so probes like importlib.util.find_spec (transformers asks for scipy) see them absent
# rather than broken.
BLOCKER = f"""
import sys

BLOCKED = {SERVER_MODULES!r}


class _Lean:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


sys.meta_path[:] = [_Lean(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
"""


@pytest.fixture
def lean_env(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "lean"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": str(folder)}


def run_lean(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **env),
        timeout=300,
        check=False,
    )


def test_the_blocker_hides_every_server_module(lean_env: dict[str, str]) -> None:
    for module in SERVER_MODULES:
        probe = run_lean(lean_env, "-c", f"import {module}")
        assert probe.returncode != 0, module
        assert f"No module named '{module}'" in probe.stderr, module


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--model", "tiny", "--db", "sqlite:///{tmp}/c.db", "--insecure"],
        ["simulate", "--model", "tiny", "--out", "{tmp}/run"],
        ["status", "--db", "sqlite:///{tmp}/c.db"],
        ["token", "create", "--db", "sqlite:///{tmp}/c.db"],
        ["db", "upgrade", "--db", "sqlite:///{tmp}/c.db"],
        ["audit", "--plan", "--target-epsilon", "8", "--rounds", "100"],
    ],
    ids=lambda a: a[0],
)
def test_server_commands_name_the_extra_in_one_line(
    lean_env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    result = run_lean(lean_env, "-m", "fedft.cli", *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"`fedft {args[0]}` needs fedft's server extra" in lines[0]
    assert "pip install 'fedft[server]'" in lines[0]


def test_a_lean_client_trains_with_local_dp_and_a_budget_against_a_full_coordinator(
    tmp_path: Path,
    processes: Processes,
    client_data: Callable[[int], Path],
    lean_env: dict[str, str],
) -> None:
    db = f"sqlite:///{tmp_path / 'coordinator.db'}"
    state = open_state(db)
    token = new_token()
    state.add_token(TokenRecord(hash_token(token), 0.0))
    port = free_port()
    processes.start(
        "coordinator",
        "serve", "--model", "tiny", "--db", db, "--bind", f"127.0.0.1:{port}", "--insecure",
        "--rounds", "1", "--min-clients", "1", "--linger", "2", "--opt", "local_steps=2",
    )  # fmt: skip
    wait_until(lambda: "listening on" in processes.log("coordinator"), 120, "the coordinator")
    processes.start(
        "lean",
        "client", "--server", f"127.0.0.1:{port}", "--insecure", "--token", token,
        "--client-id", "lean-0", "--data", str(client_data(0)), "--state-dir",
        str(tmp_path / "lean-state"), "--model", "tiny", "--poll", "1", "--max-backoff", "1",
        "--local-dp-clip", "0.5", "--local-dp-noise", "0.1", "--memory-budget", "700MiB",
        env=lean_env,
    )  # fmt: skip

    def done() -> bool:
        record = state.get_round(1)
        return record is not None and record.status == ROUND_DONE

    wait_until(done, 300, "round 1, trained by the lean client")
    assert [u.client_id for u in state.updates_for_round(1)] == ["lean-0"]
    wait_until(lambda: "the run is finished" in processes.log("lean"), 60, "the client to exit")
    assert "Traceback" not in processes.log("lean")
    # The device kept its own privacy ledger without the accounting library.
    assert (tmp_path / "lean-state" / "ledger.jsonl").is_file()
    # The budget chose the plan (the tiny model fits unchanged) and is the memory it reports.
    assert "memory budget 700 MiB: --quant none" in processes.log("lean")
    clients = {c.client_id: c for c in state.list_clients()}
    assert clients["lean-0"].properties["device.memory_mb"] == 700.0
    state.close()
