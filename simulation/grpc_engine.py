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

from fedft.cli.run_flags import client_flags, serve_flags
from fedft.core.device import CPU_SECONDS, TASK_SECONDS
from fedft.core.errors import FedftError
from fedft.core.identity import hash_token, new_token
from fedft.core.layout import reported_layout
from fedft.core.strategy import ServerStrategy
from fedft.runtime.assembly import assemble_client
from fedft.runtime.server_assembly import assemble_server
from fedft.server.round_view import RoundView, checkpoint_at, round_view
from fedft.server.state.base import State
from fedft.server.state.factory import open_state
from fedft.server.state.records import ROUND_DONE, TokenRecord
from fedft.server.tls import init_certificates
from fedft.simulation.availability import report_entry, simulation_availability
from fedft.simulation.data_split import split_data
from fedft.simulation.devices import assign_tiers
from fedft.simulation.engine import ProgressFn, finish_report, no_progress
from fedft.simulation.report import Report, RoundReport
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

    def __init__(self, spec: SimulationSpec, *, progress: ProgressFn = no_progress):
        self.spec = spec
        self.progress = progress
        self.run_spec = run = spec.run_spec()
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
        args = [
            "serve", *serve_flags(self.run_spec), "--rounds", str(spec.rounds), "--db", self.db_url,
            "--bind", "127.0.0.1:0", "--certs", str(self.workdir / "certs"),
            "--min-clients", str(spec.clients), "--linger", "3", "--heartbeat", "2",
        ]  # fmt: skip
        if spec.mode == "async":
            settings = spec.async_settings()
            args += [
                "--mode", "async", "--buffer", str(settings.buffer),
                "--max-staleness", str(settings.max_staleness),
            ]  # fmt: skip
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
                "--state-dir", str(self.workdir / "clients" / cid), *client_flags(self.run_spec),
                "--poll", "2", "--max-backoff", "2",
            ]  # fmt: skip
            if cid in tiers:
                args += ["--simulate-device", tiers[cid]]
            dp = self.run_spec.dp
            if dp is not None and dp.distributed:  # every device checks the noise it is promised
                args += ["--require-dp-noise", repr(dp.noise_multiplier)]
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
        self.server_half.load_state_dict(checkpoint_at(state, round_number))
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
            availability=report_entry(self.availability, spec.availability), mode=spec.mode,
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
                report.rounds.append(self._round_report(state, number))
                report.write(spec.out)
            self.progress("round", spec.rounds, spec.rounds)
            for _, process, _ in self._processes[1:]:
                process.wait(timeout=120)  # clients exit once they learn the run is over
            if self.dp is not None and state.ledger():
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

    def _round_report(self, state: State, number: int) -> RoundReport:
        try:
            view = round_view(state, number)
        except ValueError as exc:
            raise EngineFailure(str(exc)) from None
        return RoundReport(
            round=number,
            eval_loss=self._evaluate_checkpoint(state, number),
            bytes_up=view.bytes_up,
            bytes_down=view.bytes_down,
            participants=view.participants,
            seconds=view.seconds,
            metrics=view.metrics,
            clients=self._client_records(view),
            # The clients present this round; the coordinator offered every live client, and
            # the away ones sat the round out (counted missing at the deadline).
            available=self.availability.available(number) if self.availability.simulated else None,
        )

    def _client_records(self, view: RoundView) -> dict[str, dict[str, Any]]:
        """Per client: the layout its reply reports, the seconds it took, its payload bytes."""
        tiers = (
            assign_tiers(self.spec.device_mix, list(self.data.clients))
            if self.spec.device_mix
            else {}
        )
        records: dict[str, dict[str, Any]] = {}
        for cid, metrics in view.replies.items():
            depth, ranks = reported_layout(metrics)
            seconds, cpu = metrics.get(TASK_SECONDS), metrics.get(CPU_SECONDS)
            records[cid] = {
                "lora_depth": depth,
                "ranks": ranks,
                "seconds": None if seconds is None else round(float(seconds), 4),
                "bytes": view.client_bytes[cid],
                **({"device": view.devices[cid]} if cid in view.devices else {}),
                **({"staleness": view.staleness[cid]} if cid in view.staleness else {}),
                **(
                    {"tier": tiers[cid], "cpu_seconds": None if cpu is None else round(cpu, 6)}
                    if cid in tiers
                    else {}
                ),
            }
        return records
