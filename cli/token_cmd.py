"""``fedft token``: create one-time enrollment tokens; only their SHA-256 digests are stored."""

from __future__ import annotations

import argparse
import re
import sys
import time

from fedft.core.errors import UsageError

_DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_COUNT = 10_000


def parse_ttl(text: str) -> float | None:
    """Parse a lifetime such as ``30m``, ``24h``, ``7d`` or ``never``; seconds, or None."""
    value = text.strip().lower()
    if value == "never":
        return None
    match = _DURATION.fullmatch(value)
    if match is None:
        raise UsageError(
            f"--ttl {text!r} is not a duration: use a positive number with s, m, h or d "
            "(e.g. 30m, 24h, 7d), or never"
        )
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``token`` subcommand and its ``create`` action."""
    p = subparsers.add_parser(
        "token",
        help="create enrollment tokens for clients",
        description="Manage one-time enrollment tokens. A client enrolls once with a token and "
        "its own Ed25519 public key; afterwards it signs every request with that key.",
    )
    actions = p.add_subparsers(
        dest="token_action", metavar="ACTION", required=True, help="what to do"
    )
    create = actions.add_parser(
        "create",
        help="create tokens and print them once",
        description="Create one-time enrollment tokens and print them, one per line, to stdout. "
        "Only their SHA-256 digests are stored, so they cannot be shown again.",
    )
    create.add_argument(
        "--db",
        required=True,
        metavar="URL",
        help="the coordinator's state database, e.g. sqlite:///coordinator.db",
    )
    create.add_argument(
        "--count", type=int, default=1, metavar="N", help="how many tokens (default: 1)"
    )
    create.add_argument(
        "--ttl",
        default="24h",
        metavar="DURATION",
        help="lifetime such as 30m, 24h, 7d, or never (default: 24h)",
    )
    create.add_argument("--note", default="", metavar="TEXT", help="a note stored with each token")
    create.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Create and store the tokens, then print each one once."""
    from fedft.core.identity import hash_token, new_token
    from fedft.server.state.factory import open_state
    from fedft.server.state.records import TokenRecord

    if not 1 <= args.count <= MAX_COUNT:
        raise UsageError(f"--count must be between 1 and {MAX_COUNT}, got {args.count}")
    ttl = parse_ttl(args.ttl)
    now = time.time()
    expires_at = None if ttl is None else now + ttl
    tokens = [new_token() for _ in range(args.count)]
    state = open_state(args.db, create=True)
    try:
        for token in tokens:
            state.add_token(
                TokenRecord(
                    token_hash=hash_token(token),
                    created_at=now,
                    expires_at=expires_at,
                    note=args.note,
                )
            )
    finally:
        state.close()
    # Tokens go to stdout alone, so `fedft token create ... > tokens.txt` captures just them.
    for token in tokens:
        print(token)
    expiry = (
        "never expire"
        if expires_at is None
        else "expire at " + time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expires_at))
    )
    print(
        f"created {len(tokens)} one-time token(s); they {expiry} and are not shown again",
        file=sys.stderr,
    )
    return 0
