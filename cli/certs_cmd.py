"""``fedft certs``: create the coordinator's CA and server certificate for TLS."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``certs`` subcommand and its ``init`` action."""
    p = subparsers.add_parser(
        "certs",
        help="create the coordinator's TLS certificates",
        description="Manage the coordinator's own certificate authority. Clients verify the "
        "coordinator with its ca.pem, which they receive out of band with their enrollment token.",
    )
    actions = p.add_subparsers(
        dest="certs_action", metavar="ACTION", required=True, help="what to do"
    )
    init = actions.add_parser(
        "init",
        help="create a CA and a server certificate",
        description="Create ca.key, ca.pem, server.key and server.pem (ECDSA P-256) in --out. "
        "The server certificate names every --host plus localhost, 127.0.0.1 and ::1.",
    )
    init.add_argument(
        "--out", required=True, metavar="DIR", help="folder to write the four files into"
    )
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="a DNS name or IP address clients use to reach the coordinator (repeatable)",
    )
    init.add_argument(
        "--days",
        type=int,
        default=825,
        metavar="N",
        help="validity of the server certificate in days (default: 825; the CA lasts at least "
        "10 years)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="replace existing files (clients then need the new ca.pem)",
    )
    init.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the certificates and say what to do with them."""
    from fedft.server.tls import CA_CERT, SERVER_CERT, SERVER_KEY, init_certificates

    paths = init_certificates(args.out, args.host, days=args.days, overwrite=args.force)
    for path in paths:
        print(f"wrote {path}")
    folder = paths[0].parent
    print(
        f"\nNext: copy {folder / CA_CERT} to every client together with its enrollment token "
        "(`fedft token create`). Keep ca.key offline if you can; the coordinator needs only "
        f"{folder / SERVER_CERT} and {folder / SERVER_KEY}."
    )
    return 0
