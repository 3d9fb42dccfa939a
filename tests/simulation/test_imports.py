"""A simulation without DP loads no privacy machinery (the GPU image lacks it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Runs a one-round simulation in a fresh interpreter, then lists what it imported.
PROBE = r"""
import json, sys
from fedft.cli.main import main
code = main(sys.argv[1:])
heavy = ("cryptography", "dp_accounting", "sqlalchemy", "alembic", "gguf", "chatterbot_corpus")
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_a_plain_simulation_imports_no_privacy_or_server_stack(tmp_path: Path) -> None:
    data = tmp_path / "dialogs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"question {i}?", "response": f"answer {i}."}) + "\n"
            for i in range(40)
        )
    )
    args = [
        "simulate", "--model", "tiny", "--clients", "2", "--rounds", "1", "--dataset", str(data),
        "--partition", "iid", "--opt", "local_steps=1", "--rouge-examples", "0",
        "--eval-examples", "4", "--out", str(tmp_path / "run"), "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1"),
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
