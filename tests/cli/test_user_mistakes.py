"""Every user mistake in serve, client, status, audit, db, token and certs: one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedft.cli.main import main

LEDGER = {
    "round": 1,
    "mechanism": "gaussian",
    "noise_multiplier": 1.0,
    "clip_norm": 1.0,
    "sampling_rate": 0.5,
    "participants": 3,
    "adjacency": "add-remove",
    "recorded_at": 0.0,
}


def run_folder(tmp: Path, *, canaries: bytes | None = None, **changes: object) -> str:
    """A `fedft simulate` output folder with a one-entry ledger (and maybe a canaries.bin)."""
    folder = tmp / "run"
    folder.mkdir()
    (folder / "ledger.jsonl").write_text(json.dumps({**LEDGER, **changes}) + "\n")
    if canaries is not None:
        (folder / "canaries.bin").write_bytes(canaries)
    return str(folder)


CASES: list[tuple[str, list[str], str]] = [
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            "0",
        ],
        "--workers",
    ),
    (
        "serve",
        ["serve", "--db", "sqlite:///TMP/s.db", "--insecure", "--metrics-port", "99999"],
        "--metrics-port",
    ),
    (
        "serve",
        ["serve", "--db", "sqlite:///TMP/s.db", "--insecure", "--bind", "8.8.8.8:5000"],
        "loopback",
    ),
    (
        "serve",
        ["serve", "--db", "sqlite:///TMP/s.db", "--bind", "127.0.0.1:0", "--certs", "TMP/none"],
        "server.pem",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "[::1]:0",
            "--robust",
            "norm",
        ],
        "--robust-bound",
    ),
    ("serve", ["serve", "--db", "sqlite:///TMP/s.db", "--certs", "TMP/junk"], "not a PEM"),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--mode",
            "async",
            "--buffer",
            "0",
        ],
        "--buffer must be >= 1",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--mode",
            "async",
            "--robust",
            "median",
        ],
        "--mode async does not combine with --robust",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--model",
            "tiny",
            "--mode",
            "async",
            "--strategy",
            "legend",
        ],
        "cannot run with --mode async",
    ),
    (
        "simulate",
        ["simulate", "--model", "tiny", "--secagg", "--strategy", "legend", "--out", "TMP/r"],
        "legend cannot run under --secagg",
    ),
    (
        "simulate",
        ["simulate", "--model", "tiny", "--secagg", "--engine", "flower", "--out", "TMP/r"],
        "--secagg runs on --engine inprocess or grpc",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--secagg",
            "--mode",
            "async",
        ],
        "--secagg runs synchronous rounds only",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--secagg",
            "--strategy",
            "legend",
        ],
        "legend cannot run under --secagg",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--secagg-clip",
            "2",
        ],
        "need --secagg",
    ),
    (
        "simulate",
        ["simulate", "--model", "tiny", "--secagg-neighbours", "4", "--out", "TMP/r"],
        "need --secagg",
    ),
    (
        "simulate",
        [
            "simulate",
            "--model",
            "tiny",
            "--dp-noise",
            "1",
            "--dp-clip",
            "0.05",
            "--dp-distributed",
            "--out",
            "TMP/r",
        ],
        "--dp-distributed needs --secagg",
    ),
    (
        "serve",
        [
            "serve",
            "--db",
            "sqlite:///TMP/s.db",
            "--insecure",
            "--bind",
            "127.0.0.1:0",
            "--secagg",
            "--dp-noise",
            "1",
            "--dp-clip",
            "0.05",
            "--dp-min-survivors",
            "3",
        ],
        "needs --dp-distributed",
    ),
    (
        "client",
        [
            "client",
            "--server",
            "127.0.0.1:1",
            "--insecure",
            "--data",
            "x",
            "--require-dp-noise",
            "-1",
        ],
        "--require-dp-noise must be >= 0",
    ),
    ("certs", ["certs", "init", "--out", "/proc/fedft-certs"], "cannot create"),
    ("audit", ["audit", "--db", "sqlite:///TMP/typo.db"], "no database"),
    ("client", ["client", "--server", "127.0.0.1:1", "--data", "x"], "--ca"),
    ("status", ["status", "--db", "sqlite:///TMP/typo.db"], "no database"),
    ("db", ["db", "upgrade", "--db", "sqlite:///TMP/no/such/x.db"], "does not exist"),
    ("token", ["token", "create", "--db", "sqlite:///TMP/t.db", "--count", "0"], "--count"),
    ("certs", ["certs", "init", "--out", "TMP/c", "--host", "bad_host!"], "--host"),
    ("audit", ["audit", "--run", "RUN:noise_multiplier=str"], "must be a float"),
    ("audit", ["audit", "--run", "RUN:noise_multiplier=null"], "must be a float"),
    ("audit", ["audit", "--run", "RUN:canaries"], "not a canary record"),
    (
        "audit",
        ["audit", "--plan", "--target-epsilon", "1e-3", "--rounds", "100000", "--delta", "1e-12"],
        "no noise multiplier",
    ),
    (
        "audit",
        ["audit", "--plan", "--target-epsilon", "1e-6", "--rounds", "100000"],
        "cannot plan epsilon",
    ),
]


@pytest.mark.parametrize(("command", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_a_mistake_ends_in_one_line_and_exit_2(
    command: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defects 11 and 13 (audit values, canaries, impossible plans) among the rest."""
    args = []
    for given in argv:
        arg = given
        if given.startswith("RUN:"):
            spec = given.removeprefix("RUN:")
            if spec == "canaries":
                arg = run_folder(tmp_path, canaries=b"\x0a\x02ab")
            else:
                key, value = spec.split("=")
                arg = run_folder(tmp_path, **{key: "1.0" if value == "str" else None})
        args.append(arg.replace("TMP", str(tmp_path)))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "server.pem").write_text("junk")
    (junk / "server.key").write_text("junk")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fedft: error:"), err
    assert message in err[0], err
    assert not (tmp_path / "typo.db").exists()  # no mistake leaves a database behind
    assert not (tmp_path / "s.db").exists()
