"""Load benchmark of the gRPC coordinator: N lightweight clients submit seed-sized updates.

The coordinator runs in its own process (this script re-run with the internal ``--serve``
flag), so the load generator does not share its GIL. It binds 127.0.0.1:0 and serves a
benchmark-only strategy, ``bench_seeds``, defined here and registered in both processes: the
global state is one small float32 vector, every client gets it as its task, and an update is
one float32 vector of ``--update-bytes`` bytes (about a FedKSeed update by default), checked
for shape and finiteness and averaged in one streaming pass.

The load generator enrolls N clients (setup, not measured) and then drives the rounds from one
``grpc.aio`` event loop, many calls in flight over a few channels. Every request carries a real
Ed25519 signature. Two traffic patterns:

- burst (the default): for every round, wait for it to open, let all N clients fetch their task
  concurrently (the fetch phase), then let all N submit concurrently (the submit phase, the
  measured one). ``--spread S`` instead starts each submission at a random time within S
  seconds: an open-loop arrival rate of N/S updates/s.
- ``--long-poll``: every client loops like ``fedft client``: it long-polls FetchTask (10 s),
  submits, and long-polls again at once, so up to N polls hold coordinator threads while the
  others submit.

Latency is per submission: from just before the call is issued (the signature is already
computed) to the arrival of the response. updates/s is the measured submissions divided by the
wall time from the first one sent to the last response, summed over the rounds. After each
round the load generator reads the coordinator's database itself and checks that every
acknowledged update is stored ("lost" counts those that are not) and how many the round
aggregated. CPU seconds come from /proc: the coordinator's during the submit phases (burst) or
the whole run (long-poll), and this process's. The benchmark measures and prints; it asserts
nothing.

Examples::

    python benchmarks/coordinator_load.py                      # 1000 clients, 3 rounds, SQLite
    python benchmarks/coordinator_load.py --clients 100 --json out.json
    python benchmarks/coordinator_load.py --spread 10          # 100 updates/s offered
    python benchmarks/coordinator_load.py --db "$(scripts/pg.sh start /tmp/pg)"  # PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from fedft.core.config import ConfigError, StrategyConfig, option
from fedft.core.payload import MetricValue, Payload
from fedft.core.registry import StrategySpec, register_strategy
from fedft.core.strategy import (
    ClientInfo,
    ClientStrategy,
    Failure,
    Result,
    ServerStrategy,
    Task,
)
from fedft.core.trainer import Trainer

STRATEGY = "bench_seeds"
SERVICE = "/fedft.proto.v1.Coordinator/"
# Every client stays "alive" for the whole benchmark without sending heartbeats.
LIVENESS_S = 24 * 3600.0
POLL_S = 0.01


# --- the benchmark-only strategy ---------------------------------------------------------------


@dataclass(frozen=True)
class BenchSeedsConfig(StrategyConfig):
    """Size of the global vector and of every update."""

    vector_size: int = option(1000, "float32 elements in the global vector and in each update")

    def __post_init__(self) -> None:
        if self.vector_size < 1:
            raise ConfigError("bench_seeds: vector_size must be >= 1")


class BenchSeedsServer(ServerStrategy[BenchSeedsConfig]):
    """Benchmark strategy: every client gets the global vector; updates are averaged in."""

    def __init__(self, config: BenchSeedsConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.vector = torch.zeros(config.vector_size, dtype=torch.float32)

    def initialize(self, initial: Payload) -> None:
        """Take the starting vector from the initial payload."""
        vector = initial.tensors["w"]
        if tuple(vector.shape) != (self.config.vector_size,):
            raise ValueError(f"initial vector has shape {tuple(vector.shape)}")
        self.vector = vector.detach().to(torch.float32).clone()

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Give every available client the global vector."""
        task = Payload(tensors={"w": self.vector}, config={"round": server_round})
        return [Task(c.client_id, task) for c in clients]

    def check_update(self, server_round: int, result: Result) -> str | None:
        """Refuse an update that is not one finite float32 vector of the configured size."""
        delta = result.payload.tensors.get("delta")
        if delta is None or len(result.payload.tensors) != 1:
            return "an update is exactly one tensor named 'delta'"
        if tuple(delta.shape) != (self.config.vector_size,) or delta.dtype != torch.float32:
            return f"delta must be float32 of shape ({self.config.vector_size},)"
        if not bool(torch.isfinite(delta).all()):
            return "delta has NaN or Inf values"
        return None

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Add the mean of the valid deltas to the global vector, in one streaming pass."""
        total = torch.zeros(self.config.vector_size, dtype=torch.float64)
        accepted = rejected = 0
        for result in results:
            if self.check_update(server_round, result) is not None:
                rejected += 1
                continue
            total += result.payload.tensors["delta"].to(torch.float64)
            accepted += 1
        if accepted:
            self.vector = self.vector + (total / accepted).to(torch.float32)
        return {"accepted": accepted, "rejected": rejected, "failures": len(failures)}

    def global_state(self) -> Payload:
        """Return the global vector."""
        return Payload(tensors={"w": self.vector})

    def state_dict(self) -> Payload:
        """Checkpoint: the global vector."""
        return Payload(tensors={"w": self.vector})

    def load_state_dict(self, state: Payload) -> None:
        """Restore from :meth:`state_dict`."""
        self.initialize(state)


class BenchSeedsClient(ClientStrategy[BenchSeedsConfig]):
    """Client half, only so that the strategy registers; the load generator builds updates."""

    def prepare(self, trainer: Trainer) -> None:
        """Nothing to prepare."""

    def initial_state(self, trainer: Trainer) -> Payload:
        """Start from zeros."""
        return Payload(tensors={"w": torch.zeros(self.config.vector_size)})

    def run(self, task: Payload, local_state: Payload, trainer: Trainer) -> Payload:
        """Return a random delta."""
        return Payload(tensors={"delta": torch.randn(self.config.vector_size)})

    def load_global(self, state: Payload, trainer: Trainer) -> None:
        """Nothing to load."""


def register_bench_strategy() -> StrategySpec:
    """Register ``bench_seeds`` in this process (idempotent)."""
    return register_strategy(
        name=STRATEGY,
        config_cls=BenchSeedsConfig,
        server_cls=BenchSeedsServer,
        client_cls=BenchSeedsClient,
        summary="benchmark only: averages one small vector",
    )


def vector_size(update_bytes: int) -> int:
    """Return the float32 element count of an update of about ``update_bytes`` bytes."""
    return max(1, update_bytes // 4)


# --- the coordinator process -------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """Run the coordinator until stdin closes; print ``PORT n`` once it listens."""
    import logging

    from fedft.server.app import CoordinatorService
    from fedft.server.coordinator import Coordinator, CoordinatorSettings
    from fedft.server.state.factory import open_state

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = register_bench_strategy()
    size = vector_size(args.update_bytes)
    state = open_state(args.db)
    settings = CoordinatorSettings(
        rounds=args.rounds,
        round_timeout_s=args.round_timeout,
        min_clients=args.clients,
        liveness_s=LIVENESS_S,
    )
    coordinator = Coordinator(
        state,
        spec,
        {"vector_size": size},
        seed=0,
        settings=settings,
        model="none",
        initial=Payload(tensors={"w": torch.zeros(size)}),
    )
    service = CoordinatorService(
        coordinator,
        address="127.0.0.1:0",
        cert_dir=Path(args.certs) if args.certs else None,
        max_workers=args.workers,
    )
    port = service.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()  # the load generator closes our stdin when it is done
    service.stop(grace=1.0)
    state.close()
    return 0


@dataclass
class Server:
    """The coordinator subprocess and how to reach it."""

    process: subprocess.Popen[str]
    port: int

    def cpu_seconds(self) -> float | None:
        """Return the process's user + system CPU time so far (Linux only), or None."""
        try:
            text = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Close its stdin (it shuts down) and wait for it."""
        stdin = self.process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(args: argparse.Namespace, db: str, certs: Path | None) -> Server:
    """Start the coordinator process and wait for the port it bound."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--serve",
        "--db",
        db,
        "--clients",
        str(args.clients),
        "--rounds",
        str(args.rounds),
        "--update-bytes",
        str(args.update_bytes),
        "--workers",
        str(args.workers),
        "--round-timeout",
        str(args.round_timeout),
    ]
    if certs is not None:
        command += ["--certs", str(certs)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out: IO[str] | None = process.stdout
    line = out.readline() if out is not None else ""
    if not line.startswith("PORT "):
        process.kill()
        raise SystemExit(f"the coordinator process did not start (said {line!r})")
    return Server(process, int(line.split()[1]))


# --- the database ------------------------------------------------------------------------------


def prepare_database(url: str | None, workdir: Path) -> tuple[str, Callable[[], None]]:
    """Return an empty database URL for the run and a function that removes what we created.

    No URL: a SQLite file in ``workdir``. A PostgreSQL URL: a fresh database on that server,
    dropped afterwards. A SQLite path or URL given explicitly must not hold a run yet.
    """
    import sqlalchemy as sa

    from fedft.server.state.engine import parse_url

    if url is None:
        return str(workdir / "coordinator.db"), lambda: None
    parsed = parse_url(url)
    if parsed.get_backend_name() != "postgresql":
        return url, lambda: None
    name = f"fedft_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return parsed.set(database=name).render_as_string(hide_password=False), drop


def add_tokens(db: str, count: int) -> list[str]:
    """Create the schema if needed and store ``count`` fresh enrollment tokens."""
    from fedft.core.identity import hash_token, new_token
    from fedft.server.state.factory import open_state
    from fedft.server.state.records import TokenRecord

    state = open_state(db)
    try:
        if state.get_run() is not None:
            raise SystemExit(f"{db} already holds a run; give an empty database")
        tokens = [new_token() for _ in range(count)]
        now = time.time()
        for token in tokens:
            state.add_token(TokenRecord(hash_token(token), created_at=now, note="benchmark"))
        return tokens
    finally:
        state.close()


# --- the load generator ------------------------------------------------------------------------


@dataclass
class BenchClient:
    """One simulated client: its identity and the stub of the channel it uses."""

    client_id: str
    key: Any  # Ed25519PrivateKey
    stub: Any  # CoordinatorStub over a grpc.aio channel


@dataclass
class RoundResult:
    """What one round measured, and what the database says about it afterwards."""

    round: int
    clients: int
    acked: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    fetch_errors: int = 0
    retried: int = 0
    submit_window_s: float = 0.0
    updates_per_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    fetch_latencies_ms: list[float] = field(default_factory=list)
    server_cpu_s: float | None = None
    loadgen_cpu_s: float | None = None
    close_wait_s: float = 0.0
    stored: int = 0
    lost: int = 0
    aggregated: int = 0
    first_sent: float = math.inf
    last_done: float = -math.inf
    acked_ids: set[str] = field(default_factory=set)

    def finish_window(self) -> None:
        """Derive the submission window and the rate from the first send and last response."""
        self.acked = len(self.acked_ids)
        if self.last_done > self.first_sent:
            self.submit_window_s = self.last_done - self.first_sent
            self.updates_per_s = len(self.latencies_ms) / self.submit_window_s


INTERNAL_FIELDS = ("latencies_ms", "fetch_latencies_ms", "first_sent", "last_done", "acked_ids")


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0..100) by the nearest-rank method; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def make_update(size: int, rng: torch.Generator) -> bytes:
    """Serialize one update: a fresh random delta, so no two updates share a blob."""
    from fedft.core.serde import payload_to_bytes

    delta = torch.randn(size, generator=rng, dtype=torch.float32)
    return payload_to_bytes(Payload(tensors={"delta": delta}, metrics={"num_examples": 1}))


class LoadGenerator:
    """Drives N clients against the coordinator from one event loop."""

    def __init__(self, args: argparse.Namespace, port: int, ca_pem: Path | None):
        self.args = args
        self.port = port
        self.ca_pem = ca_pem
        self.clients: list[BenchClient] = []
        self.channels: list[Any] = []
        self.rng = torch.Generator().manual_seed(args.seed)
        self.spread = random.Random(args.seed)
        self.size = vector_size(args.update_bytes)
        self._submit_gate = asyncio.Semaphore(args.concurrency)

    def _signed(self, client: BenchClient, method: str) -> list[tuple[str, str]]:
        from fedft.core.identity import sign_request

        return sign_request(client.key, SERVICE + method, client.client_id)

    def _open_channels(self) -> None:
        import grpc

        from fedft.client.tls import channel_credentials

        options = [
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 8 << 20),
            # One TCP connection per channel, rather than one subchannel shared by all.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        for _ in range(self.args.channels):
            if self.ca_pem is None:
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options)
            else:
                creds = channel_credentials(self.ca_pem)
                channel = grpc.aio.secure_channel(f"localhost:{self.port}", creds, options=options)
            self.channels.append(channel)

    async def enroll(self, tokens: list[str]) -> None:
        """Create N identities and enroll them concurrently (setup, not measured)."""
        from fedft.core.identity import generate_key, public_key_bytes
        from fedft.proto.v1 import coordinator_pb2 as pb
        from fedft.proto.v1 import coordinator_pb2_grpc as pb_grpc

        self._open_channels()
        for channel in self.channels:
            await channel.channel_ready()
        stubs = [pb_grpc.CoordinatorStub(c) for c in self.channels]
        width = len(str(self.args.clients - 1))
        self.clients = [
            BenchClient(f"bench-{i:0{width}d}", generate_key(), stubs[i % len(stubs)])
            for i in range(self.args.clients)
        ]
        gate = asyncio.Semaphore(min(self.args.concurrency, 200))

        async def one(client: BenchClient, token: str) -> None:
            request = pb.EnrollRequest(
                token=token,
                public_key=public_key_bytes(client.key),
                client_id=client.client_id,
                profile=pb.ClientProfile(num_examples=1),
            )
            async with gate:
                await client.stub.Enroll(request, timeout=self.args.timeout)

        await asyncio.gather(*(one(c, t) for c, t in zip(self.clients, tokens, strict=True)))

    async def fetch(self, client: BenchClient, wait_ms: int) -> tuple[Any, bool]:
        """Call FetchTask once; return (the task header or None, whether the run is finished)."""
        from fedft.proto.v1 import coordinator_pb2 as pb

        call = client.stub.FetchTask(
            pb.FetchTaskRequest(wait_ms=wait_ms),
            metadata=self._signed(client, "FetchTask"),
            timeout=self.args.timeout + wait_ms / 1000,
        )
        header: Any = None
        finished = False
        async for message in call:
            part = message.WhichOneof("part")
            if part == "header":
                header = message.header
            elif part == "no_task":
                finished = message.no_task.finished
        return header, finished

    async def submit(
        self, client: BenchClient, task: Any, data: bytes, result: RoundResult, *, measure: bool
    ) -> bool:
        """Send one update; record its latency (if ``measure``); return whether it was stored."""
        import grpc

        from fedft.core.chunking import sha256
        from fedft.proto.v1 import coordinator_pb2 as pb

        header = pb.UpdateHeader(
            task_id=task.task_id,
            round=task.round,
            payload_size=len(data),
            payload_sha256=sha256(data),
        )
        messages = [pb.UpdateChunk(header=header), pb.UpdateChunk(data=data)]
        metadata = self._signed(client, "SubmitUpdate")
        start = time.perf_counter()
        try:
            await client.stub.SubmitUpdate(
                iter(messages), metadata=metadata, timeout=self.args.timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS and not measure:
                result.acked_ids.add(task.task_id)  # a retry of an update that got through
                return True
            if measure:
                result.errors += 1
                result.error_codes[exc.code().name] = result.error_codes.get(exc.code().name, 0) + 1
            return False
        done = time.perf_counter()
        result.acked_ids.add(task.task_id)
        if measure:
            result.latencies_ms.append((done - start) * 1000)
            result.first_sent = min(result.first_sent, start)
            result.last_done = max(result.last_done, done)
        return True

    async def submit_with_retries(
        self, client: BenchClient, task: Any, data: bytes, result: RoundResult
    ) -> None:
        """Submit (measured), then retry a failure a few times (unmeasured) so rounds finish."""
        if await self.submit(client, task, data, result, measure=True):
            return
        for attempt in range(3):
            await asyncio.sleep(0.5 * (attempt + 1))
            result.retried += 1
            if await self.submit(client, task, data, result, measure=False):
                return

    def _delay(self) -> float:
        return self.spread.uniform(0.0, self.args.spread) if self.args.spread > 0 else 0.0

    # --- burst mode: fetch phase, then submit phase, round by round ----------------------------
    async def burst_round(self, result: RoundResult, server: Server) -> None:
        """All clients fetch their task concurrently; then all submit concurrently (measured)."""
        import grpc

        gate = asyncio.Semaphore(self.args.concurrency)

        async def fetch_one(client: BenchClient) -> Any:
            async with gate:
                for _ in range(3):
                    start = time.perf_counter()
                    try:
                        header, _ = await self.fetch(client, 5_000)
                    except grpc.aio.AioRpcError:
                        continue
                    result.fetch_latencies_ms.append((time.perf_counter() - start) * 1000)
                    if header is not None and header.round == result.round:
                        return header
            result.fetch_errors += 1
            return None

        tasks = await asyncio.gather(*(fetch_one(c) for c in self.clients))
        pairs = zip(self.clients, tasks, strict=True)
        work = [(c, t, make_update(self.size, self.rng)) for c, t in pairs if t is not None]

        async def submit_one(client: BenchClient, task: Any, data: bytes) -> None:
            delay = self._delay()
            if delay:
                await asyncio.sleep(delay)
            async with gate:
                await self.submit_with_retries(client, task, data, result)

        cpu_server, cpu_self = server.cpu_seconds(), time.process_time()
        await asyncio.gather(*(submit_one(*w) for w in work))
        cpu_server_end = server.cpu_seconds()
        result.loadgen_cpu_s = time.process_time() - cpu_self
        if cpu_server is not None and cpu_server_end is not None:
            result.server_cpu_s = cpu_server_end - cpu_server

    # --- long-poll mode: every client loops like `fedft client` --------------------------------
    async def client_loop(self, client: BenchClient, results: dict[int, RoundResult]) -> None:
        """Long-poll for a task, submit it, long-poll again, until the run is finished."""
        import grpc

        gate = self._submit_gate
        done: set[int] = set()
        while True:
            try:
                task, finished = await self.fetch(client, 10_000)
            except grpc.aio.AioRpcError:
                # Charged to the round this client is waiting for.
                results[min(len(done) + 1, len(results))].fetch_errors += 1
                await asyncio.sleep(0.5)
                continue
            if finished:
                return
            if task is None or task.round in done or task.round not in results:
                continue
            result = results[task.round]
            data = make_update(self.size, self.rng)
            delay = self._delay()
            if delay:
                await asyncio.sleep(delay)
            async with gate:
                await self.submit_with_retries(client, task, data, result)
            done.add(task.round)

    async def long_poll_run(self, results: dict[int, RoundResult]) -> None:
        """Run every client's loop at once."""
        await asyncio.gather(*(self.client_loop(c, results) for c in self.clients))

    async def close(self) -> None:
        """Close the channels."""
        for channel in self.channels:
            await channel.close()


async def wait_round(state: Any, number: int, status: str, timeout: float) -> Any:
    """Poll the database until round ``number`` exists (``open``) or is ``done``."""
    deadline = time.monotonic() + timeout
    while True:
        record = await asyncio.to_thread(state.get_round, number)
        if record is not None and status in ("open", record.status):
            return record
        if time.monotonic() > deadline:
            raise SystemExit(f"round {number} did not reach {status!r} within {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def verify_round(state: Any, result: RoundResult, timeout: float) -> None:
    """Wait for the round to close; check every acknowledged update is stored and aggregated."""
    waiting = time.perf_counter()
    record = await wait_round(state, result.round, "done", timeout)
    result.close_wait_s = time.perf_counter() - waiting
    updates = await asyncio.to_thread(state.updates_for_round, result.round)
    stored = {u.task_id for u in updates}
    result.stored = len(stored)
    result.lost = len(result.acked_ids - stored)
    result.aggregated = int(record.metrics.get("accepted", 0))
    result.finish_window()


def round_line(result: RoundResult) -> str:
    """One line of progress for a finished round."""
    return (
        f"round {result.round}: {result.acked} acked in {result.submit_window_s:.2f} s "
        f"({result.updates_per_s:.0f}/s), p99 {percentile(result.latencies_ms, 99):.0f} ms, "
        f"aggregated {result.aggregated}, lost {result.lost}, errors {result.errors}"
    )


async def run_benchmark(
    args: argparse.Namespace, server: Server, ca_pem: Path | None, db: str, tokens: list[str]
) -> tuple[list[RoundResult], dict[str, float | None]]:
    """Enroll, run every round, verify each against the database; return results and CPU."""
    from fedft.server.state.factory import open_state

    generator = LoadGenerator(args, server.port, ca_pem)
    state = open_state(db, create=False)  # the parent only reads it
    results = {n: RoundResult(n, args.clients) for n in range(1, args.rounds + 1)}
    timeout = args.round_timeout + 30
    try:
        start = time.perf_counter()
        await generator.enroll(tokens)
        print(f"enrolled {args.clients} clients in {time.perf_counter() - start:.1f} s", flush=True)
        await wait_round(state, 1, "open", timeout)
        cpu_server, cpu_self, wall = server.cpu_seconds(), time.process_time(), time.perf_counter()
        if args.long_poll:
            await generator.long_poll_run(results)
            for result in results.values():
                await verify_round(state, result, timeout)
                print(round_line(result), flush=True)
        else:
            for number, result in results.items():
                await wait_round(state, number, "open", timeout)
                await generator.burst_round(result, server)
                await verify_round(state, result, timeout)
                print(round_line(result), flush=True)
        cpu_server_end = server.cpu_seconds()
        run = {
            "run_wall_s": time.perf_counter() - wall,
            "run_loadgen_cpu_s": time.process_time() - cpu_self,
            "run_server_cpu_s": None
            if cpu_server is None or cpu_server_end is None
            else cpu_server_end - cpu_server,
        }
    finally:
        await generator.close()
        state.close()
    return list(results.values()), run


# --- reporting ---------------------------------------------------------------------------------


def summarize(
    args: argparse.Namespace, results: list[RoundResult], run: dict[str, float | None], backend: str
) -> dict[str, Any]:
    """Fold the rounds into the numbers the report prints (and --json writes)."""
    latencies = [x for r in results for x in r.latencies_ms]
    fetches = [x for r in results for x in r.fetch_latencies_ms]
    window = sum(r.submit_window_s for r in results)
    server_cpu = [r.server_cpu_s for r in results if r.server_cpu_s is not None]
    loadgen_cpu = [r.loadgen_cpu_s for r in results if r.loadgen_cpu_s is not None]
    return {
        "clients": args.clients,
        "rounds": args.rounds,
        "mode": "long-poll" if args.long_poll else "burst",
        "backend": backend,
        "tls": args.tls,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "channels": args.channels,
        "spread_s": args.spread,
        "update_bytes": args.update_bytes,
        "acked": sum(r.acked for r in results),
        "updates_per_s": len(latencies) / window if window > 0 else math.nan,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=math.nan),
        "fetch_p50_ms": percentile(fetches, 50),
        "fetch_p99_ms": percentile(fetches, 99),
        "lost": sum(r.lost for r in results),
        "errors": sum(r.errors + r.fetch_errors for r in results),
        "aggregated": sum(r.aggregated for r in results),
        # Burst mode: CPU during the submit phases only; long-poll mode: the whole run.
        "server_cpu_s": sum(server_cpu) if server_cpu else run["run_server_cpu_s"],
        "loadgen_cpu_s": sum(loadgen_cpu) if loadgen_cpu else run["run_loadgen_cpu_s"],
        **run,
        "rounds_detail": [
            {k: v for k, v in asdict(r).items() if k not in INTERNAL_FIELDS}
            | {
                "p50_ms": percentile(r.latencies_ms, 50),
                "p99_ms": percentile(r.latencies_ms, 99),
                "max_ms": max(r.latencies_ms, default=math.nan),
                "fetch_p99_ms": percentile(r.fetch_latencies_ms, 99),
            }
            for r in results
        ],
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def print_report(summary: dict[str, Any], results: list[RoundResult]) -> None:
    """Print a per-round table and the totals."""
    from rich.console import Console
    from rich.table import Table

    s = summary
    table = Table(
        title=f"coordinator load: {s['clients']} clients, {s['mode']}, {s['backend']}, "
        f"{'TLS' if s['tls'] else 'insecure'}, {s['update_bytes']} B updates, "
        f"{s['workers']} workers"
    )
    columns = ("round", "acked", "updates/s", "p50 ms", "p90 ms", "p99 ms", "max ms")
    columns += ("fetch p99 ms", "lost", "errors", "server CPU s", "loadgen CPU s")
    for name in columns:
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            str(r.round),
            str(r.acked),
            _num(r.updates_per_s, 0),
            _num(percentile(r.latencies_ms, 50)),
            _num(percentile(r.latencies_ms, 90)),
            _num(percentile(r.latencies_ms, 99)),
            _num(max(r.latencies_ms, default=math.nan)),
            _num(percentile(r.fetch_latencies_ms, 99)),
            str(r.lost),
            str(r.errors + r.fetch_errors),
            _num(r.server_cpu_s, 2),
            _num(r.loadgen_cpu_s, 2),
        )
    table.add_row(
        "all",
        str(s["acked"]),
        _num(s["updates_per_s"], 0),
        _num(s["p50_ms"]),
        _num(s["p90_ms"]),
        _num(s["p99_ms"]),
        _num(s["max_ms"]),
        _num(s["fetch_p99_ms"]),
        str(s["lost"]),
        str(s["errors"]),
        _num(s["server_cpu_s"], 2),
        _num(s["loadgen_cpu_s"], 2),
        style="bold",
    )
    Console(width=160).print(table)
    met = s["p99_ms"] < 100 and s["lost"] == 0 and s["errors"] == 0
    print(
        f"aggregated {s['aggregated']} of {s['acked']} acknowledged updates, lost {s['lost']}, "
        f"errors {s['errors']}; whole run {s['run_wall_s']:.1f} s wall; "
        f"goal (p99 < 100 ms, zero lost): {'met' if met else 'not met'}"
    )


# --- entry point -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every number is measured on this machine with the load generator and the "
        "coordinator sharing its cores; see benchmarks/README.md.",
    )
    p.add_argument(
        "--clients",
        type=int,
        default=1000,
        metavar="N",
        help="simulated clients; a round starts once all N are enrolled (default: %(default)s)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="R",
        help="rounds to run and measure (default: %(default)s)",
    )
    p.add_argument(
        "--update-bytes",
        type=int,
        default=4000,
        metavar="B",
        help="raw size of each update (a float32 vector of B/4 elements; default "
        "%(default)s, about a FedKSeed update)",
    )
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="coordinator state: a .db path or sqlite:/// URL (must hold no run), or "
        "a postgresql+psycopg:// URL, in which a fresh database is created and "
        "dropped afterwards (default: a SQLite file in a temporary folder)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=128,
        metavar="N",
        help="the coordinator's RPC worker threads (default: %(default)s, as `fedft serve`)",
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        action="store_true",
        help="serve over TLS with certificates made by init_certificates",
    )
    tls.add_argument(
        "--insecure", dest="tls", action="store_false", help="plaintext over loopback (the default)"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="C",
        help="cap on submissions in flight in the load generator (in burst mode also on "
        "fetches; enrollment uses at most 200); default: the number of clients",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=4,
        metavar="K",
        help="gRPC channels (TCP connections) the clients share (default: %(default)s)",
    )
    p.add_argument(
        "--spread",
        type=float,
        default=0.0,
        metavar="S",
        help="start each submission at a uniformly random time within S seconds "
        "instead of all at once (an open-loop arrival rate of N/S; default: 0, a "
        "burst)",
    )
    p.add_argument(
        "--long-poll",
        action="store_true",
        help="clients behave like `fedft client`: right after submitting, each long-polls "
        "FetchTask (10 s) for its next task, holding a coordinator worker thread while it "
        "waits; without it, the load generator separates each round into a fetch phase and a "
        "submit phase (a burst)",
    )
    p.add_argument(
        "--round-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="the coordinator's round deadline (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="deadline of each RPC (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the update contents and of --spread (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the results as JSON to PATH",
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--certs", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.clients < 1 or args.rounds < 1 or args.update_bytes < 4:
        p.error("--clients and --rounds must be >= 1, --update-bytes >= 4")
    if args.concurrency is None:
        args.concurrency = args.clients
    if args.concurrency < 1 or args.channels < 1 or args.workers < 1:
        p.error("--concurrency, --channels and --workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with the internal --serve, the coordinator process)."""
    args = parse_args(argv)
    if args.serve:
        return serve(args)
    from fedft.server.tls import init_certificates

    register_bench_strategy()
    workdir = Path(tempfile.mkdtemp(prefix="fedft-load-"))
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    server: Server | None = None
    try:
        db, cleanup = prepare_database(args.db, workdir)
        backend = db.split(":", 1)[0] if "://" in db else "sqlite"
        tokens = add_tokens(db, args.clients)
        certs = workdir / "certs" if args.tls else None
        if certs is not None:
            init_certificates(certs, ["127.0.0.1"])
        server = start_server(args, db, certs)
        print(f"coordinator pid {server.process.pid} on port {server.port} ({backend})", flush=True)
        ca_pem = certs / "ca.pem" if certs is not None else None
        results, run = asyncio.run(run_benchmark(args, server, ca_pem, db, tokens))
    finally:
        if server is not None:
            server.stop()
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarize(args, results, run, backend)
    print_report(summary, results)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
