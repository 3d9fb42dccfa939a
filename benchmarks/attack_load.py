"""Honest clients under attack: stalled stranger streams and one flooding enrolled client.

Runs one burst round of ``coordinator_load.py``'s honest clients (N clients fetch, then submit;
TLS on loopback; a SQLite state) twice against a fresh coordinator process: once alone, once
while an attacker process holds ``--stalled`` Enroll streams that never send a body (reopening
each one the moment the server ends it) and an enrolled client floods GetStatus with
``--flood-concurrency`` calls in flight. Prints, side by side, the honest success rate (updates
acknowledged and aggregated out of N), honest submit and fetch latency, and the coordinator's
peak RSS; plus what the attacker got. It measures and prints; it asserts nothing.

The flooding client enrolls after the round opened, so the round does not wait for its update.

Example (small, as on a shared 2-core machine)::

    python benchmarks/attack_load.py --clients 100 --stalled 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import coordinator_load as load

SERVICE = "/fedft.proto.v1.Coordinator/"


# --- the attacker process --------------------------------------------------------------------


async def attack(port: int, ca: Path, token: str, stalled: int, flood: int) -> dict[str, Any]:
    """Hold ``stalled`` silent Enroll streams and flood GetStatus until stdin closes."""
    import grpc

    from fedft.core.identity import generate_key, public_key_bytes, sign_request
    from fedft.proto.v1 import coordinator_pb2 as pb
    from fedft.proto.v1 import coordinator_pb2_grpc as pb_grpc

    creds = grpc.ssl_channel_credentials((ca).read_bytes())
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.secure_channel(f"localhost:{port}", creds, options=options)
        for _ in range(max(1, stalled // 100))
    ]
    counts: dict[str, int] = {}
    stop = asyncio.Event()

    def count(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    async def silent() -> Any:
        await stop.wait()
        return
        yield b""  # an async generator that never sends

    async def hold(index: int) -> None:
        channel = channels[index % len(channels)]
        call = channel.stream_unary(SERVICE + "Enroll")
        while not stop.is_set():
            try:
                await call(silent(), timeout=3600)
                count("stalled:OK")
            except grpc.aio.AioRpcError as exc:
                count(f"stalled:{exc.code().name}")
            await asyncio.sleep(0.1)  # then open it again

    key = generate_key()
    stub = pb_grpc.CoordinatorStub(channels[0])
    enrolled = await stub.Enroll(
        pb.EnrollRequest(token=token, public_key=public_key_bytes(key), client_id="flooder")
    )

    async def flood_one() -> None:
        while not stop.is_set():
            metadata = sign_request(key, SERVICE + "GetStatus", enrolled.client_id)
            try:
                await stub.GetStatus(pb.GetStatusRequest(), metadata=metadata, timeout=30)
                count("flood:OK")
            except grpc.aio.AioRpcError as exc:
                count(f"flood:{exc.code().name}")

    workers = [asyncio.create_task(hold(i)) for i in range(stalled)]
    workers += [asyncio.create_task(flood_one()) for _ in range(flood)]
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # the benchmark closes our stdin when done
    stop.set()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return counts


def start_attacker(args: argparse.Namespace, port: int, ca: Path, token: str) -> Any:
    """Start the attacker process and wait until its streams and flood are under way."""
    command = [sys.executable, __file__, "--attacker", str(port), str(ca), token]
    command += ["--stalled", str(args.stalled), "--flood-concurrency", str(args.flood_concurrency)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "READY":
        process.kill()
        raise SystemExit("the attacker did not start")
    return process


# --- one scenario ----------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def honest_round(args: argparse.Namespace, server: Any, ca: Path, db: str, tokens: list[str]):  # type: ignore[no-untyped-def]
    """Enroll N honest clients, wait for round 1, start the attack (maybe), run the round."""
    from fedft.server.state.factory import open_state

    generator = load.LoadGenerator(args, server.port, ca)
    state = open_state(db, create=False)
    result = load.RoundResult(1, args.clients)
    attacker = None
    try:
        await generator.enroll(tokens[: args.clients])
        await load.wait_round(state, 1, "open", args.round_timeout)
        if args.attack:
            attacker = start_attacker(args, server.port, ca, tokens[-1])
            await asyncio.sleep(args.settle)  # let the stalled streams pile up first
        await generator.burst_round(result, server)
        await load.verify_round(state, result, args.round_timeout + 30)
    finally:
        counts: dict[str, int] = {}
        if attacker is not None:
            out, _ = attacker.communicate("", timeout=60)
            counts = json.loads(out.strip().splitlines()[-1])
        await generator.close()
        state.close()
    return result, counts


def scenario(args: argparse.Namespace, *, attack_on: bool) -> dict[str, Any]:
    """Run one round with or without the attack; return its figures."""
    from fedft.server.tls import init_certificates

    args.attack = attack_on
    workdir = Path(tempfile.mkdtemp(prefix="fedft-attack-"))
    server = None
    try:
        db, _cleanup = load.prepare_database(None, workdir)
        tokens = load.add_tokens(db, args.clients + 1)
        init_certificates(workdir / "certs", ["127.0.0.1"])
        server = load.start_server(args, db, workdir / "certs")
        result, counts = asyncio.run(
            honest_round(args, server, workdir / "certs/ca.pem", db, tokens)
        )
        rss = peak_rss_mb(server.process.pid)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "attack": attack_on,
        "honest_acked": result.acked,
        "honest_aggregated": result.aggregated,
        "honest_success": result.aggregated / args.clients,
        "submit_p50_ms": load.percentile(result.latencies_ms, 50),
        "submit_p99_ms": load.percentile(result.latencies_ms, 99),
        "fetch_p99_ms": load.percentile(result.fetch_latencies_ms, 99),
        "errors": result.errors + result.fetch_errors,
        "retried": result.retried,
        "server_peak_rss_mb": rss,
        "attacker": counts,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line (the coordinator_load options the honest half needs)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=100, help="honest clients (default: 100)")
    p.add_argument("--stalled", type=int, default=10_000, help="stalled stranger streams")
    p.add_argument("--flood-concurrency", type=int, default=16, help="flood calls in flight")
    p.add_argument("--settle", type=float, default=2.0, help="seconds of attack before the round")
    p.add_argument("--workers", type=int, default=128, help="coordinator RPC threads")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--attacker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # What coordinator_load's server and load generator read.
    args.rounds, args.update_bytes, args.round_timeout, args.timeout = 1, 4000, 300.0, 120.0
    args.concurrency, args.channels, args.spread, args.seed = args.clients, 4, 0.0, 0
    args.tls, args.long_poll = True, False
    return args


def main(argv: list[str] | None = None) -> int:
    """Run both scenarios and print them side by side (or, internally, be the attacker)."""
    args = parse_args(argv)
    if args.attacker is not None:
        port, ca, token = args.attacker
        counts = asyncio.run(
            attack(int(port), Path(ca), token, args.stalled, args.flood_concurrency)
        )
        print(json.dumps(counts), flush=True)
        return 0
    load.register_bench_strategy()
    rows = [scenario(args, attack_on=False), scenario(args, attack_on=True)]
    print(f"{args.clients} honest clients, 1 burst round, TLS; attack: {args.stalled} stalled")
    print(
        f"stranger Enroll streams + 1 enrolled client flooding GetStatus x{args.flood_concurrency}"
    )
    print(f"{'':24}{'no attack':>14}{'attack':>14}")
    for key in (
        "honest_success",
        "honest_aggregated",
        "submit_p50_ms",
        "submit_p99_ms",
        "fetch_p99_ms",
        "errors",
        "server_peak_rss_mb",
    ):
        print(f"{key:24}{rows[0][key]:>14.2f}{rows[1][key]:>14.2f}")
    print(f"attacker outcomes: {rows[1]['attacker']}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
