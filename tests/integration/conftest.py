"""Helpers for tests that run real fedft processes: launching, waiting, cleaning up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from fedft.runtime.data import load_chatterbot


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds, or fail the test naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """Starts ``python -m fedft.cli ...`` processes with logs, and kills leftovers at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``fedft ARGS`` logging to LOG_DIR/NAME.log; ``env`` adds variables."""
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **(env or {}))
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "fedft.cli", *args], stdout=log, stderr=log, env=env
        )
        self.running.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    yield procs
    procs.kill_all()


@pytest.fixture
def client_data(tmp_path: Path) -> Callable[[int], Path]:
    """Write a small JSONL shard of the chatterbot dialogs for client number ``k``."""
    examples = load_chatterbot()

    def shard(k: int) -> Path:
        path = tmp_path / f"data-{k}.jsonl"
        rows = examples[k * 40 : (k + 1) * 40]
        path.write_text("".join(json.dumps(asdict(ex)) + "\n" for ex in rows))
        return path

    return shard
