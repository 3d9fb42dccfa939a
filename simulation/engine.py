"""The in-process engine: many virtual clients, one model in memory, the real serde on every hop."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedft.core.config import StrategyConfig
from fedft.core.device import TASK_SECONDS, DeviceProfile, stamp_task_seconds, tier_profile
from fedft.core.hosting import REJECTED, accepted_results, rejected_count
from fedft.core.layout import reported_layout
from fedft.core.payload import Payload
from fedft.core.registry import StrategySpec
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import (
    ClientInfo,
    ClientStrategy,
    Failure,
    Result,
    ServerStrategy,
    Task,
)
from fedft.privacy.ledger import LEDGER_FILE
from fedft.privacy.local import CLIENTS_DIR, worst_client
from fedft.privacy.run_dir import RunRecorder, audit_run_folder
from fedft.runtime.assembly import assemble_client
from fedft.runtime.data import Example
from fedft.runtime.device import measure_profile
from fedft.runtime.evaluation import generate_answers, rouge_l, rouge_l_papers
from fedft.runtime.export import export_model
from fedft.runtime.models import ModelBundle
from fedft.runtime.placement import peak_memory_mb
from fedft.runtime.server_assembly import assemble_server
from fedft.runtime.spec import resolve_strategy
from fedft.runtime.trainer import LocalTrainer
from fedft.simulation.availability import report_entry, simulation_availability
from fedft.simulation.batched_clients import check_batchable, run_together
from fedft.simulation.data_split import split_data
from fedft.simulation.devices import assign_tiers
from fedft.simulation.provenance import model_facts, provenance
from fedft.simulation.report import Report, RoundReport
from fedft.simulation.spec import SimulationSpec

if TYPE_CHECKING:  # cryptography loads only for --secagg (the GPU image lacks it)
    from fedft.simulation.secure_rounds import SecureRounds

logger = logging.getLogger(__name__)

# Called as (event, done, total): "round" and "client" events drive the progress display.
ProgressFn = Callable[[str, int, int], None]


def no_progress(event: str, done: int, total: int) -> None:
    """A progress callback that shows nothing (the default of every engine)."""
    return None


@dataclass
class VirtualClient:
    """A simulated client: its id, its trainer over its own data, its persisted local state."""

    client_id: str
    trainer: LocalTrainer
    local_state: Payload = field(default_factory=Payload)


@dataclass
class _Wire:
    """Byte counters of one round; every payload really goes through serialization."""

    up: int = 0
    down: int = 0

    def down_hop(self, payload: Payload) -> Payload:
        data = payload_to_bytes(payload)
        self.down += len(data)
        return payload_from_bytes(data)

    def up_hop(self, payload: Payload) -> Payload:
        data = payload_to_bytes(payload)
        self.up += len(data)
        return payload_from_bytes(data)


def build_strategy(spec: SimulationSpec) -> tuple[StrategySpec, StrategyConfig]:
    """Resolve the strategy name and build its validated config."""
    return resolve_strategy(spec.strategy, spec.strategy_options)


class InProcessEngine:
    """Runs a registered strategy over N virtual clients that share one loaded model."""

    def __init__(self, spec: SimulationSpec, *, progress: ProgressFn = no_progress):
        self.spec = spec
        self.progress = progress
        check_batchable(build_strategy(spec)[0].config_cls, spec.batch_clients)
        run = spec.run_spec()
        data = split_data(spec)
        self.eval_set: list[Example] = data.eval_set
        self.rouge_set: list[Example] = data.rouge_set
        # Model, quantization, device and client-side DP: the one assembly point every host uses.
        self.runtime = assemble_client(run)
        self.strategy, self.config = self.runtime.strategy, self.runtime.config
        self.bundle: ModelBundle = self.runtime.bundle
        self.memory = self.runtime.memory
        self.client_half: ClientStrategy[Any] = self.runtime.client_half
        self.local_dp = self.runtime.local_dp
        server = assemble_server(run)
        self.server_half: ServerStrategy[Any] = server.server_half
        if spec.mode == "async":  # before any training: a strategy that cannot, in one line
            from fedft.strategies.buffered import check_async

            check_async(self.server_half, name=spec.strategy)
        self.dp_server = server.dp
        self.secure: SecureRounds | None = None
        if run.secagg is not None:  # every round a real SecAgg+ among its participants
            from fedft.simulation.secure_rounds import SecureRounds

            self.secure = SecureRounds(
                self.server_half,
                self.client_half,
                run.secagg,
                session=f"simulation:{spec.seed}",
                seed=spec.seed,
            )
        self.recorder = RunRecorder(spec.out) if self.dp_server is not None else None
        self.audit_result: dict[str, Any] | None = None
        self.clients = {
            cid: VirtualClient(cid, self.runtime.trainer(examples))
            for cid, examples in data.clients.items()
        }
        self.evaluator = self.runtime.evaluator
        self.availability = simulation_availability(spec.availability, spec.seed, data.clients)
        self.tiers: dict[str, str] = {}
        self._client_cpu = 0.0
        self.profiles: dict[str, DeviceProfile] = {}
        if spec.device_mix:
            self.tiers = assign_tiers(spec.device_mix, list(self.clients))
            # One micro-benchmark of this machine, before adapters train; tiers scale it.
            first = next(iter(self.clients.values()))
            batch = int(getattr(self.config, "batch_size", 8))
            base = measure_profile(first.trainer, batch_size=batch)
            self.profiles = {cid: tier_profile(base, t) for cid, t in self.tiers.items()}

    def _evaluate(self) -> float:
        return self.runtime.evaluate(self.server_half.global_state(), self.eval_set)

    def _run_tasks(
        self,
        server_round: int,
        tasks: list[Task],
        wire: _Wire,
        records: dict[str, dict[str, Any]],
    ) -> Iterator[Result]:
        """Run each task on its client lazily, so aggregation can stream the results.

        Each client's time is on a virtual clock: the CPU time of its work (shielded from light
        load on this machine, not from heavy contention), times its tier's slowdown, plus its
        bytes over its tier's link. Under ``--batch-clients N`` up to N tasks run together and
        share the CPU time of their shared steps evenly.
        """
        size = self.spec.batch_clients
        done = 0
        for begin in range(0, len(tasks), size):
            group = tasks[begin : begin + size]
            down, down_bytes = [], []
            for task in group:
                before = wire.down
                down.append(wire.down_hop(task.payload))
                down_bytes.append(wire.down - before)  # this task's own download
            started = time.process_time()
            if len(group) == 1:  # alone, a client trains as it always did
                client = self.clients[group[0].client_id]
                replies = [self.client_half.run(down[0], client.local_state, client.trainer)]
            else:
                calls = [
                    partial(self.client_half.run, payload, self.clients[task.client_id].local_state)
                    for task, payload in zip(group, down, strict=True)
                ]
                trainers = [self.clients[task.client_id].trainer for task in group]
                replies = run_together(calls, trainers)
            spent = time.process_time() - started
            self._client_cpu += spent
            cpu = spent / len(group)  # each client's even share of the shared work
            for task, reply, received, payload in zip(
                group, replies, down_bytes, down, strict=True
            ):
                sent = reply
                if self.secure is not None:  # the vector stays on the device, masked
                    trainer = self.clients[task.client_id].trainer
                    sent = self.secure.take(task, payload, reply, trainer)
                result = self._finish_task(
                    server_round,
                    task,
                    sent,
                    cpu=cpu,
                    down_bytes=received,
                    wire=wire,
                    records=records,
                )
                if size > 1:  # how many clients shared its training steps
                    records[task.client_id]["batched_with"] = len(group)
                yield result
                done += 1
                self.progress("client", done, len(tasks))

    def _finish_task(
        self,
        server_round: int,
        task: Task,
        reply: Payload,
        *,
        cpu: float,
        down_bytes: int,
        wire: _Wire,
        records: dict[str, dict[str, Any]],
    ) -> Result:
        """Stamp a reply's virtual time, send it up the wire and record the client's round."""
        if self.local_dp is not None:  # the client's own ledger, as the daemon keeps it
            folder = self.spec.out / CLIENTS_DIR / task.client_id
            self.local_dp.record_release(folder, server_round)
        profile = self.profiles.get(task.client_id)
        if profile is not None:  # the same stamp as the edge daemon's, so engines agree
            seconds = stamp_task_seconds(reply, cpu, down_bytes, profile)
        else:
            seconds = cpu
            reply.metrics[TASK_SECONDS] = float(seconds)  # same bytes as the grpc engine
        up_before = wire.up
        result = Result(task.client_id, wire.up_hop(reply))
        depth, ranks = reported_layout(result.payload.metrics)  # as the strategy says
        records[task.client_id] = {
            "lora_depth": depth,
            "ranks": ranks,
            "seconds": round(seconds, 4),
            "bytes": down_bytes + wire.up - up_before,
            "device": self.runtime.device_name,
            **(
                {"tier": self.tiers[task.client_id], "cpu_seconds": round(cpu, 6)}
                if profile
                else {}
            ),
        }
        return result

    def run(self) -> Report:
        """Run all rounds, writing the report after each; returns the final report."""
        spec = self.spec
        report = Report(
            strategy=spec.strategy,
            model=spec.model,
            clients=spec.clients,
            seed=spec.seed,
            dataset=spec.dataset,
            partition=spec.partition,
            engine=spec.engine,
            config=self.config.to_dict(),
            memory=self.memory,
            device=self.runtime.device_name,
            availability=report_entry(self.availability, spec.availability),
            participation=spec.participation,
            mode=spec.mode,
        )
        if self.recorder is not None:
            self.recorder.start()
        for stale in (spec.out / CLIENTS_DIR).glob(f"*/{LEDGER_FILE}"):
            stale.unlink()  # an earlier run's releases are not this run's
        self.server_half.initialize(self.runtime.initial_state())
        report.initial = {"eval_loss": self._evaluate()}
        report.write(spec.out)
        infos = [
            ClientInfo(
                cid,
                c.trainer.num_examples,
                self.profiles[cid].to_properties() if cid in self.profiles else {},
            )
            for cid, c in self.clients.items()
        ]
        if spec.mode == "async":
            from fedft.simulation.async_run import AsyncRun

            AsyncRun(self, spec.async_settings(), infos).run(report)
        else:
            self._run_rounds(report, infos)
        self.progress("round", spec.rounds, spec.rounds)
        final = finish_report(
            report,
            spec,
            self.evaluator,
            self.rouge_set,
            self.progress,
            clients_dir=spec.out / CLIENTS_DIR,
        )
        if self.recorder is not None:
            self.audit_result = audit_run_folder(spec.out)
        return final

    def _run_rounds(self, report: Report, infos: list[ClientInfo]) -> None:
        """Synchronous rounds: configure, run the sampled clients, aggregate, evaluate."""
        spec = self.spec
        for server_round in range(1, spec.rounds + 1):
            self.progress("round", server_round - 1, spec.rounds)
            start, start_cpu = time.perf_counter(), time.process_time()
            wire = _Wire()
            records: dict[str, dict[str, Any]] = {}
            self._client_cpu = 0.0
            # Only the clients reachable this round are offered (--availability).
            available = self.availability.available(server_round)
            reachable = set(available)
            offered = [info for info in infos if info.client_id in reachable]
            tasks = self.server_half.configure(server_round, offered)
            failures: list[Failure] = []
            if self.secure is not None:  # weights are fixed before anyone trains
                self.secure.begin(tasks, offered)
            results = self._run_tasks(server_round, tasks, wire, records)
            if self.secure is not None:
                metrics, up, down = self.secure.aggregate(
                    server_round, list(results), failures, records
                )
                wire.up, wire.down = wire.up + up, wire.down + down
            else:
                metrics = self.server_half.aggregate(
                    server_round,
                    accepted_results(self.server_half, server_round, results, failures),
                    failures,
                )
            metrics = {**metrics, REJECTED: rejected_count(failures)}
            server = max(time.process_time() - start_cpu - self._client_cpu, 0.0)
            if self.recorder is not None and self.dp_server is not None:
                self.recorder.after_round(self.dp_server)
            eval_loss = self._evaluate()
            seconds = time.perf_counter() - start
            if self.profiles:
                # Virtual round time: clients work in parallel, so the straggler sets the pace,
                # plus the server's own work (configure, aggregate); evaluation is not counted.
                seconds = server + max((r["seconds"] for r in records.values()), default=0.0)
            report.rounds.append(
                RoundReport(
                    round=server_round,
                    eval_loss=eval_loss,
                    bytes_up=wire.up,
                    bytes_down=wire.down,
                    participants=len(tasks),
                    seconds=round(seconds, 3),
                    metrics=metrics,
                    clients=records,
                    available=available if self.availability.simulated else None,
                )
            )
            report.write(spec.out)
            logger.info("round %d: eval_loss %.4f", server_round, eval_loss)


def finish_report(
    report: Report,
    spec: SimulationSpec,
    evaluator: LocalTrainer,
    rouge_set: list[Example],
    progress: ProgressFn = no_progress,
    *,
    clients_dir: Path | None = None,
) -> Report:
    """Score the final global model (held in ``evaluator``), save its adapter, write the report.

    Every engine ends this way, so their ``report.json`` files agree in shape. Under client-side
    DP, ``clients_dir`` holds one folder per client with its ledger; the worst-off client's
    epsilon goes into the report.
    """
    rouge: float | None = None
    rouge_papers: float | None = None
    if rouge_set:
        progress("rouge", 0, len(rouge_set))
        answers = generate_answers(
            evaluator.bundle, [ex.prompt for ex in rouge_set], max_new_tokens=spec.max_new_tokens
        )
        references = [ex.response for ex in rouge_set]
        rouge = rouge_l(answers, references)
        rouge_papers = rouge_l_papers(answers, references)
    report.final = {
        "eval_loss": report.rounds[-1].eval_loss,
        "rouge_l": rouge,
        # The papers' metric (rouge 1.0.1, no stemming) beside the stemmed rouge-score one.
        "rouge_l_papers": rouge_papers,
        "bytes_total": report.bytes_total,
    }
    peak = peak_memory_mb(evaluator.bundle.device)
    if peak is not None:  # proof that the GPU did the work, and how much memory it took
        report.final["peak_gpu_mb"] = round(peak, 1)
    if spec.local_dp_config() is not None and clients_dir is not None and clients_dir.is_dir():
        report.final.update(worst_client(sorted(p for p in clients_dir.iterdir() if p.is_dir())))
    report.provenance = provenance(spec, evaluator.bundle.path)
    folder = spec.out / ("adapter" if evaluator.bundle.lora_spec is not None else "model")
    export_model(evaluator, folder, spec.model, model_facts(report, spec))
    report.write(spec.out)
    return report
