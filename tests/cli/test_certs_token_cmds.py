"""``fedft certs init`` and ``fedft token create`` through the real command-line entry point."""

from __future__ import annotations

import argparse
import re
import stat
import time
from pathlib import Path

import pytest

from fedft.cli.main import build_parser, main
from fedft.core.identity import hash_token
from fedft.server.state.factory import open_state


def action_parser(command: str, action: str) -> argparse.ArgumentParser:
    """Return the parser of ``fedft COMMAND ACTION``."""
    parser: argparse.ArgumentParser = build_parser()
    for name in (command, action):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


@pytest.mark.parametrize(("command", "action"), [("certs", "init"), ("token", "create")])
def test_every_flag_is_explained(
    command: str, action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, action, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for act in action_parser(command, action)._actions:
        assert act.help, f"{command} {action} {act.option_strings} has no help"
        for flag in act.option_strings:
            assert flag in text


def test_certs_init_writes_files_and_refuses_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "init", "--out", str(out), "--host", "fl.example.org"]) == 0
    printed = capsys.readouterr().out
    for name in ("ca.key", "ca.pem", "server.key", "server.pem"):
        assert f"wrote {out / name}" in printed
    assert "copy" in printed
    assert str(out / "ca.pem") in printed
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    first = (out / "ca.pem").read_bytes()

    assert main(["certs", "init", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("fedft: error: refusing to overwrite")
    assert "--force" in err[0]
    assert (out / "ca.pem").read_bytes() == first

    assert main(["certs", "init", "--out", str(out), "--force"]) == 0
    assert (out / "ca.pem").read_bytes() != first


def test_certs_init_bad_host_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "init", "--out", str(tmp_path), "--host", "a b"]) == 2
    assert "neither an IP address nor a DNS name" in capsys.readouterr().err


def test_token_create_prints_tokens_and_stores_hashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    before = time.time()
    assert (
        main(["token", "create", "--db", url, "--count", "3", "--ttl", "2h", "--note", "lab"]) == 0
    )
    captured = capsys.readouterr()
    tokens = captured.out.split()
    assert len(tokens) == 3
    assert len(set(tokens)) == 3
    assert all(re.fullmatch(r"fedft_[A-Za-z0-9_-]{32}", t) for t in tokens)
    assert "not shown again" in captured.err

    state = open_state(url)
    try:
        stored = state.list_tokens()
    finally:
        state.close()
    assert sorted(r.token_hash for r in stored) == sorted(hash_token(t) for t in tokens)
    for record in stored:
        assert record.note == "lab"
        assert record.used_at is None
        assert record.expires_at is not None
        assert record.expires_at - record.created_at == pytest.approx(7200.0)
        assert record.created_at >= before - 1
        assert all(t not in repr(record) for t in tokens)  # only the digest is stored


def test_token_create_never_expires(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert main(["token", "create", "--db", url, "--ttl", "never"]) == 0
    assert len(capsys.readouterr().out.split()) == 1
    state = open_state(url)
    try:
        (record,) = state.list_tokens()
    finally:
        state.close()
    assert record.expires_at is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ttl", "soon"], "--ttl 'soon' is not a duration"),
        (["--ttl", "0h"], "is not a duration"),
        (["--ttl=-5m"], "is not a duration"),
        (["--count", "0"], "--count must be between 1"),
    ],
)
def test_token_create_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    db = tmp_path / "state.db"
    assert main(["token", "create", "--db", f"sqlite:///{db}", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fedft: error:")
    assert message in lines[0]
    assert not db.exists()  # refused before the database was touched
