"""The grpc engine: a real coordinator process and N client processes on loopback, over TLS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from fedft.core.device import CPU_SECONDS, CUDA_PROPERTY, TASK_SECONDS
from fedft.core.errors import FedftError
from fedft.core.identity import hash_token, new_token
from fedft.core.serde import payload_from_bytes
from fedft.core.strategy import ServerStrategy
from fedft.privacy.config import DPConfig
from fedft.runtime.assembly import assemble_client
from fedft.runtime.server_assembly import assemble_server
from fedft.server.state.base import State
from fedft.server.state.factory import open_state
from fedft.server.state.records import ROUND_DONE, TokenRecord, TrafficRecord
from fedft.server.tls import init_certificates
from fedft.simulation.availability import report_entry, simulation_availability
from fedft.simulation.data_split import split_data
from fedft.simulation.devices import adapter_layout, assign_tiers
from fedft.simulation.engine import ProgressFn, _no_progress, finish_report
from fedft.simulation.report import Report, RoundRecord
from fedft.simulation.spec import SimulationSpec

STARTUP_TIMEOUT_S = 300.0
POLL_S = 0.2
# Under --availability an away client sits its round out, so the round closes at its deadline:
# long enough for a present client's local work on a small model, short enough to wait for.
AWAY_ROUND_TIMEOUT_S = 60.0


class EngineFailure(FedftError):
    """A coordinator or client process died; the message quotes its log."""


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class GrpcEngine:
    """Runs the same simulation as the in-process engine through the deployable stack.

    Everything a deployment has is exercised: certificates, one-time tokens, signed calls,
    chunked streams, durable state. The parent process only watches the coordinator's database
    and evaluates each round's checkpoint with the same evaluator as the in-process engine, so
    both engines write the same ``report.json``.
    """

    def __init__(self, spec: SimulationSpec, *, progress: ProgressFn = _no_progress):
        self.spec = spec
        self.progress = progress
        run = spec.run_spec()
        # The parent evaluates each round's checkpoint with the same runtime as the clients.
        self.runtime = assemble_client(run)
        self.strategy, self.config = self.runtime.strategy, self.runtime.config
        self.memory = self.runtime.memory
        # Checkpoints of a DP run carry dp.* entries only the wrapper knows how to load.
        self.server_half: ServerStrategy[Any] = assemble_server(run).server_half
        self.dp = run.dp
        self.audit_result: dict[str, Any] | None = None
        self.evaluator = self.runtime.evaluator
        self.data = split_data(spec)
        self.availability = simulation_availability(spec.availability, spec.seed, self.data.clients)
        self.workdir = spec.out / "grpc"
        if self.workdir.exists():
            shutil.rmtree(self.workdir)  # a fresh run: stale state would be resumed, not redone
        (self.workdir / "data").mkdir(parents=True)
        (self.workdir / "logs").mkdir()
        self.db_url = f"sqlite:///{self.workdir / 'coordinator.db'}"
        init_certificates(self.workdir / "certs", ["127.0.0.1"])
        self._processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self._handles: list[IO[bytes]] = []

    # --- processes -----------------------------------------------------------------------------
    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.workdir / "logs" / f"{name}.log"
        handle = log.open("wb")
        self._handles.append(handle)
        process = subprocess.Popen(
            [sys.executable, "-m", "fedft.cli", *args],
            stdout=subprocess.PIPE if name == "coordinator" else handle,
            stderr=handle,
            env=env,
        )
        self._processes.append((name, process, log))
        return process

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HF_HUB_OFFLINE"] = "1"
        # N training processes share this machine's cores: one thread each avoids the
        # oversubscription that stalls torch's parallel kernels.
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def _start_coordinator(self) -> int:
        spec = self.spec
        options = [f"--opt={k}={_cli_value(v)}" for k, v in spec.strategy_options.items()]
        args = [
            "serve", "--strategy", spec.strategy, *options, "--rounds", str(spec.rounds),
            "--model", spec.model, "--seed", str(spec.seed), "--db", self.db_url,
            "--bind", "127.0.0.1:0", "--certs", str(self.workdir / "certs"),
            "--min-clients", str(spec.clients), "--linger", "3", "--heartbeat", "2",
        ]  # fmt: skip
        args += _dp_args(self.dp)
        args += ["--participation", spec.participation]
        if spec.availability.strip() != "always":
            args += ["--round-timeout", str(AWAY_ROUND_TIMEOUT_S)]
        env = self._environment()
        env.pop("OMP_NUM_THREADS")  # the coordinator only aggregates; let it use the cores
        process = self._launch("coordinator", args, env)
        assert process.stdout is not None
        line = process.stdout.readline().decode()  # "fedft coordinator listening on HOST:PORT ..."
        if "listening on" not in line:
            raise EngineFailure(f"the coordinator did not start:\n{_tail(self._processes[0][2])}")
        return int(line.split("listening on ")[1].split()[0].rpartition(":")[2])

    def _start_clients(self, port: int, tokens: dict[str, str]) -> None:
        tiers = (
            assign_tiers(self.spec.device_mix, list(self.data.clients))
            if self.spec.device_mix
            else {}
        )
        # Who is present in each round (--availability); each client is told the rounds it is away.
        rounds = range(1, self.spec.rounds + 1)
        schedule = [set(self.availability.available(r)) for r in rounds]
        for cid, examples in self.data.clients.items():
            path = self.workdir / "data" / f"{cid}.jsonl"
            path.write_text("".join(json.dumps(asdict(ex)) + "\n" for ex in examples))
            args = [
                "client", "--server", f"127.0.0.1:{port}",
                "--ca", str(self.workdir / "certs" / "ca.pem"),
                "--token", tokens[cid], "--client-id", cid, "--data", str(path),
                "--state-dir", str(self.workdir / "clients" / cid), "--model", self.spec.model,
                "--max-length", str(self.spec.max_length), "--poll", "2", "--max-backoff", "2",
                "--quant", self.spec.quant, "--device", self.spec.device,
            ]  # fmt: skip
            local_dp = self.spec.local_dp_config()
            if local_dp is not None:
                args += [
                    f"--local-dp-clip={local_dp.clip!r}",
                    f"--local-dp-noise={local_dp.noise_multiplier!r}",
                ]
            if cid in tiers:
                args += ["--simulate-device", tiers[cid]]
            away = [str(r) for r, present in enumerate(schedule, start=1) if cid not in present]
            if away:
                args += ["--simulate-absent-rounds", ",".join(away)]
            self._launch(cid, args, self._environment())

    def _check_processes(self) -> None:
        for name, process, log in self._processes:
            code = process.poll()
            if code not in (None, 0):
                raise EngineFailure(f"{name} exited with code {code}:\n{_tail(log)}")

    def _shutdown(self) -> None:
        for _, process, _ in self._processes:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self._processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in self._handles:
            handle.close()

    # --- the run -------------------------------------------------------------------------------
    def _evaluate_checkpoint(self, state: State, round_number: int) -> float:
        self.server_half.load_state_dict(payload_from_bytes(state.get_checkpoint(round_number)))
        return self.runtime.evaluate(self.server_half.global_state(), self.data.eval_set)

    def _wait_for_round(self, state: State, round_number: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S + self.spec.rounds * 600
        while time.monotonic() < deadline:
            record = state.get_round(round_number)
            if record is not None and record.status == ROUND_DONE:
                return
            self._check_processes()
            time.sleep(POLL_S)
        raise EngineFailure(f"round {round_number} did not finish in time")

    def run(self) -> Report:
        """Run all rounds through the real stack; returns the report (also written to disk)."""
        spec = self.spec
        report = Report(
            strategy=spec.strategy, model=spec.model, clients=spec.clients, seed=spec.seed,
            dataset=spec.dataset, partition=spec.partition, engine="grpc",
            config=self.config.to_dict(), memory=self.memory, device=self.runtime.device_name,
            participation=spec.participation,
            availability=report_entry(self.availability, spec.availability),
        )  # fmt: skip
        tokens = {cid: new_token() for cid in self.data.clients}
        state = open_state(self.db_url)
        for token in tokens.values():
            state.add_token(TokenRecord(hash_token(token), time.time(), note="fedft simulate"))
        try:
            port = self._start_coordinator()
            self._start_clients(port, tokens)
            self._wait_for_initial_checkpoint(state)
            report.initial = {"eval_loss": self._evaluate_checkpoint(state, 0)}
            report.write(spec.out)
            for number in range(1, spec.rounds + 1):
                self.progress("round", number - 1, spec.rounds)
                self._wait_for_round(state, number)
                report.rounds.append(self._round_record(state, number))
                report.write(spec.out)
            self.progress("round", spec.rounds, spec.rounds)
            for _, process, _ in self._processes[1:]:
                process.wait(timeout=120)  # clients exit once they learn the run is over
            if self.dp is not None:
                self.audit_result = self._audit(state)
        finally:
            self._shutdown()
            state.close()
        return finish_report(
            report,
            spec,
            self.evaluator,
            self.data.rouge_set,
            self.progress,
            clients_dir=self.workdir / "clients",  # each daemon's state folder holds its ledger
        )

    def _audit(self, state: State) -> dict[str, Any]:
        """Audit from the coordinator's database, as `fedft audit --db` does; files go to out."""
        # dp-accounting and scipy load only for a DP run (a GPU image may lack them).
        from fedft.privacy.audit import audit
        from fedft.privacy.ledger import LEDGER_FILE, write_jsonl
        from fedft.privacy.report import write_json, write_png
        from fedft.server.privacy_source import audit_input

        result = audit(audit_input(state, self.db_url), 1e-5)
        write_json(result, self.spec.out)
        write_png(result, self.spec.out)
        write_jsonl(self.spec.out / LEDGER_FILE, audit_input(state, self.db_url).ledger)
        return result

    def _wait_for_initial_checkpoint(self, state: State) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while state.get_run() is None:
            self._check_processes()
            if time.monotonic() > deadline:
                raise EngineFailure("the coordinator did not initialise its run in time")
            time.sleep(POLL_S)

    def _round_record(self, state: State, number: int) -> RoundRecord:
        record = state.get_round(number)
        if record is None or record.closed_at is None:
            raise EngineFailure(f"round {number} is not closed")
        traffic = state.list_traffic(number)
        return RoundRecord(
            round=number,
            eval_loss=self._evaluate_checkpoint(state, number),
            # The payload bytes inside the messages: what the in-process engine counts too.
            bytes_up=sum(t.payload_up for t in traffic),
            bytes_down=sum(t.payload_down for t in traffic),
            participants=len(state.tasks_for_round(number)),
            seconds=round(record.closed_at - record.started_at, 3),
            metrics={
                k: v
                for k, v in record.metrics.items()
                if isinstance(v, (int, float)) and k not in ("updates", "missing")
            },
            clients=self._client_records(state, number, traffic),
            # The clients present this round; the coordinator offered every live client, and
            # the away ones sat the round out (counted missing at the deadline).
            available=self.availability.available(number) if self.availability.simulated else None,
        )

    def _client_records(
        self, state: State, number: int, traffic: list[TrafficRecord]
    ) -> dict[str, dict[str, Any]]:
        """Per client: the layout its task named, the seconds it reported, its payload bytes."""
        tiers = (
            assign_tiers(self.spec.device_mix, list(self.data.clients))
            if self.spec.device_mix
            else {}
        )
        # Each daemon says in its profile whether it trains on a CUDA GPU.
        devices = {
            c.client_id: "cuda" if c.properties[CUDA_PROPERTY] else "cpu"
            for c in state.list_clients()
            if CUDA_PROPERTY in c.properties
        }
        seconds: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for update in state.updates_for_round(number):
            metrics = payload_from_bytes(state.get_blob(update.payload_sha)).metrics
            if metrics.get(TASK_SECONDS) is not None:
                seconds[update.client_id] = round(float(metrics[TASK_SECONDS]), 4)
            if metrics.get(CPU_SECONDS) is not None:
                cpu[update.client_id] = round(float(metrics[CPU_SECONDS]), 6)
        records: dict[str, dict[str, Any]] = {}
        for task in state.tasks_for_round(number):
            payload = payload_from_bytes(b"".join(state.get_blob(sha) for sha in task.payload_shas))
            depth, ranks = adapter_layout(dict(payload.tensors), dict(payload.config))
            moved = sum(
                t.payload_up + t.payload_down for t in traffic if t.client_id == task.client_id
            )
            records[task.client_id] = {
                "lora_depth": depth,
                "ranks": ranks,
                "seconds": seconds.get(task.client_id),
                "bytes": moved,
                **({"device": devices[task.client_id]} if task.client_id in devices else {}),
                **(
                    {"tier": tiers[task.client_id], "cpu_seconds": cpu.get(task.client_id)}
                    if task.client_id in tiers
                    else {}
                ),
            }
        return records


def _dp_args(dp: DPConfig | None) -> list[str]:
    """The `fedft serve` flags that ask for ``dp``."""
    if dp is None:
        return []
    args = [
        f"--dp-noise={dp.noise_multiplier!r}",
        f"--dp-clip={dp.clip!r}",
        f"--dp-sampling-rate={dp.sampling_rate!r}",
        f"--canaries={dp.canaries}",
    ]
    if dp.count_stddev is not None:
        args.append(f"--dp-count-stddev={dp.count_stddev!r}")
    flags = [("--dp-adaptive", dp.adaptive), ("--canary-iterates", dp.all_iterates)]
    return args + [flag for flag, on in flags if on]


def _cli_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
