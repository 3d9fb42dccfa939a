"""The edge client daemon: enroll once, keep the model loaded, fetch tasks, train, send updates."""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from fedft.client.connection import (
    Connection,
    NoTaskMessage,
    RunDescription,
    TaskMessage,
    profile_message,
)
from fedft.client.identity_store import ClientStore, Identity
from fedft.client.retry import retrying
from fedft.client.secure_task import SecureParticipation
from fedft.core.device import (
    CUDA_PROPERTY,
    TASK_SECONDS,
    DeviceProfile,
    stamp_task_seconds,
    tier_profile,
)
from fedft.core.errors import UsageError
from fedft.core.identity import generate_key
from fedft.core.payload import Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientStrategy
from fedft.privacy.config import LocalDPConfig
from fedft.privacy.ledger import LEDGER_FILE
from fedft.privacy.local import LocalDPClient
from fedft.privacy.secagg.task import SecureTask, noise_refusal
from fedft.runtime.assembly import assemble_client, place
from fedft.runtime.data import load_dataset
from fedft.runtime.device import LinkMeter, measure_profile
from fedft.runtime.models import PRESETS, load_model
from fedft.runtime.placement import resolve_device
from fedft.runtime.spec import RunSpec
from fedft.runtime.trainer import LocalTrainer

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DaemonOptions:
    """Everything ``fedft client`` needs."""

    server: str
    data: str
    state_dir: Path
    credentials: grpc.ChannelCredentials | None
    model: str | None = None
    token: str | None = None
    client_id: str = ""
    max_length: int = 128
    poll_s: float = 10.0
    local_dp: LocalDPConfig | None = None  # clip and noise every reply on this device
    # Take part only in secure sums whose device noise reaches this multiplier (0: any task).
    require_dp_noise: float = 0.0
    max_backoff_s: float = 30.0
    quant: str = "none"  # quantize the frozen base for LoRA strategies (nf4, int8)
    gradient_checkpointing: bool = False  # recompute layer activations in backward: less memory
    micro_batch: int | None = None  # examples per forward/backward within one step
    autocast: str = "none"  # "bf16": local steps' forward under bf16 autocast
    # --memory-budget: the profile reports at most this much memory; the plan is logged.
    memory_budget_mb: float | None = None
    memory_plan: str | None = None
    max_retries: int | None = None
    # Simulation only: report as a device of this tier (fedft.core.device.TIERS) would.
    simulate_device: str | None = None
    # Simulation only: the rounds this device is away (--availability in the grpc engine); it
    # fetches those rounds' tasks and sits them out, so the coordinator counts it missing.
    simulate_absent_rounds: frozenset[int] = frozenset()
    device: str = "auto"  # where training runs (fedft.runtime.placement)


class ClientDaemon:
    """Runs one client until the coordinator's run is finished."""

    def __init__(self, options: DaemonOptions, *, report: Callable[[str], None] = logger.info):
        self.options = options
        self.report = report
        self.store = ClientStore(options.state_dir)
        self.connection = Connection(options.server, credentials=options.credentials)
        self.examples = load_dataset(options.data)
        self._stop = threading.Event()
        self.profile: DeviceProfile | None = None
        self.link = LinkMeter()
        self._profile_dirty = False
        self._on_cuda = False

    def stop(self) -> None:
        """Ask the daemon to stop after the current step."""
        self._stop.set()

    # --- retries -----------------------------------------------------------------------------
    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """Call until it succeeds, backing off on transient failures; other errors propagate."""
        return retrying(
            what,
            call,
            connection=self.connection,
            max_backoff_s=self.options.max_backoff_s,
            max_retries=self.options.max_retries,
            stop=self._stop,
            report=self.report,
        )

    # --- start-up ----------------------------------------------------------------------------
    def _identity(self) -> Identity:
        stored = self.store.load_identity(self.options.server)
        if stored is not None:
            self.connection.use_identity(stored.client_id, stored.key)
            return stored
        if not self.options.token:
            raise UsageError(
                "this client is not enrolled yet: pass --token (from `fedft token create`)"
            )
        key = generate_key()
        profile = self._profile_message()
        try:
            client_id, _ = self._retrying(
                "enroll",
                lambda: self.connection.enroll(
                    self.options.token or "", key, self.options.client_id, profile
                ),
            )
        except grpc.RpcError as exc:
            raise UsageError(f"enrollment refused: {exc.details()}") from None
        identity = Identity(client_id, self.options.server, key)
        self.store.save_identity(identity)
        self.report(f"enrolled as {client_id}")
        return identity

    def _run_description(self) -> RunDescription:
        from fedft.client.connection import run_description

        try:
            response = self._retrying(
                "heartbeat", lambda: self.connection.heartbeat(self._profile_message())
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise UsageError(
                    f"the coordinator does not accept our identity ({exc.details()}); "
                    f"delete {self.options.state_dir} and enroll again with a new token"
                ) from None
            raise
        return run_description(response.run)

    def _model_spec(self, run: RunDescription) -> str:
        if self.options.model == "server":
            from fedft.client.model_download import fetch_model

            self.report("downloading the base model from the coordinator")
            return self._retrying("model download", lambda: fetch_model(self.connection))
        if self.options.model:
            return self.options.model
        if run.model in PRESETS:
            return run.model
        raise UsageError(
            f"the coordinator trains {run.model!r}, which this device cannot resolve: "
            "pass --model PATH (a local copy) or --model server (download it)"
        )

    # --- device profile ----------------------------------------------------------------------
    def _profile_message(self) -> Any:
        """Example count plus the measured device profile (link speed from the last transfers)."""
        properties: dict[str, float] = {}
        if self.profile is not None:
            profile = self.profile
            if self.options.simulate_device is None and self.link.samples:
                profile = dataclasses.replace(profile, link_mbps=self.link.mbps)
            properties = profile.to_properties()
            properties[CUDA_PROPERTY] = 1.0 if self._on_cuda else 0.0  # which device trains
        self._profile_dirty = False
        return profile_message(len(self.examples), dict(properties))

    def measure(self, trainer: LocalTrainer, batch_size: int = 8) -> DeviceProfile:
        """Run the micro-benchmark now (start-up, or on demand) and send it with the next call."""
        measured = measure_profile(trainer, batch_size=batch_size, link_mbps=self.link.mbps)
        budget = self.options.memory_budget_mb
        if budget is not None and budget < measured.memory_mb:
            # Planners (legend) size the device's work by this: the budget, not the free RAM.
            measured = dataclasses.replace(measured, memory_mb=budget)
        self._on_cuda = trainer.bundle.device.type == "cuda"
        tier = self.options.simulate_device
        self.profile = tier_profile(measured, tier) if tier else measured
        self._profile_dirty = True
        p = self.profile
        self.report(
            f"device profile: step {p.step_seconds(p.num_layers):.3f} s at full LoRA depth, "
            f"{p.step_seconds(1):.3f} s at depth 1, {p.memory_mb:.0f} MB free"
            + (f" (simulated {tier} device)" if tier else "")
        )
        return self.profile

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> int:
        """Enroll if needed, then work on tasks until the run is finished; returns exit code 0."""
        bundle = None
        device = resolve_device(self.options.device)  # a missing GPU fails before any work
        if self.options.memory_plan is not None:
            self.report(self.options.memory_plan)
        if self.options.model and self.options.model != "server":
            # The model is known before we meet the coordinator: profile it first, so the
            # enrollment or first heartbeat already carries the device's capacity.
            # Quantized as it loads (streamed where it can): the fp32 base never sits in memory.
            bundle = load_model(self.options.model, quant=self.options.quant)
            place(bundle, device)
            self.measure(LocalTrainer(bundle, self.examples, max_length=self.options.max_length))
        identity = self._identity()
        run = self._run_description()
        if bundle is None:
            bundle = load_model(self._model_spec(run), quant=self.options.quant)
        runtime = assemble_client(
            RunSpec(
                strategy=run.strategy,
                options=dict(run.config),
                model=bundle.source,
                quant=self.options.quant,
                device=self.options.device,
                max_length=self.options.max_length,
                gradient_checkpointing=self.options.gradient_checkpointing,
                micro_batch=self.options.micro_batch,
                autocast=self.options.autocast,
                local_dp=self.options.local_dp,
            ),
            bundle=bundle,
        )
        strategy = runtime.client_half
        if self.profile is None:
            self.measure(LocalTrainer(bundle, self.examples, max_length=self.options.max_length))
        trainer = runtime.trainer(self.examples)
        self.report(f"training on {runtime.device_name}")
        summary = bundle.quant
        if summary is not None:
            before, after = summary.bytes_before / 1e6, summary.bytes_after / 1e6
            self.report(
                f"{summary.scheme} base: {before:.1f} MB -> {after:.1f} MB of weights "
                f"({summary.saved_fraction:.0%} saved)"
            )
        count = len(self.examples)
        self.report(f"{identity.client_id}: {run.strategy} on {bundle.source}, {count} examples")
        heartbeat = threading.Thread(target=self._heartbeats, name="fedft-heartbeat", daemon=True)
        heartbeat.start()
        try:
            return self._work(strategy, trainer)
        finally:
            self._stop.set()
            self.connection.close()

    def _work(self, strategy: ClientStrategy[Any], trainer: LocalTrainer) -> int:
        local_state = self.store.load_local_state()
        local_dp = strategy if isinstance(strategy, LocalDPClient) else None
        if local_dp is not None:
            folder = self.options.state_dir
            self.report(
                f"local DP: each update is recorded in {folder / LEDGER_FILE} "
                f"(fedft audit --run {folder})"
            )
        away = 0  # the last round sat out, so its note is logged once
        while not self._stop.is_set():
            message = self._retrying(
                "fetch task", lambda: self.connection.fetch_task(self.options.poll_s)
            )
            if isinstance(message, NoTaskMessage):
                if message.finished:
                    self.report("the run is finished")
                    return 0
                self._stop.wait(message.retry_after_s)
                continue
            task = payload_from_bytes(message.data)
            secure = SecureTask.from_config(task.config)
            reason = self._sit_out(message.round, secure)
            if reason is not None:
                if message.round != away:
                    self.report(f"round {message.round}: {reason}, sitting it out")
                    away = message.round
                self._stop.wait(self.options.poll_s)  # the task stays ours until the deadline
                continue
            started = time.perf_counter()
            train = functools.partial(
                self._train,
                message,
                task,
                strategy=strategy,
                trainer=trainer,
                local_state=local_state,
                local_dp=local_dp,
            )
            if secure is not None:  # the update leaves this device only masked
                participation = SecureParticipation(
                    self.connection, self._retrying, self.report, strategy=strategy, trainer=trainer
                )
                participation.run(message, task, secure, train)
                continue
            data = payload_to_bytes(train())
            try:
                sent = time.perf_counter()
                self._submit(message, data)
                self.link.record(len(data), time.perf_counter() - sent)
                self._profile_dirty = True
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                    pass  # an earlier attempt got through before its answer was lost
                elif exc.code() in (
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    self.report(f"round {message.round}: update refused: {exc.details()}")
                    continue
                else:
                    raise
            seconds = time.perf_counter() - started
            self.report(
                f"round {message.round}: sent {len(data) / 1e6:.2f} MB after {seconds:.1f} s"
            )
        return 0

    def _sit_out(self, number: int, secure: SecureTask | None) -> str | None:
        """Why this device sits round ``number`` out, or None to take part."""
        if number in self.options.simulate_absent_rounds:
            return "away (simulated)"
        return noise_refusal(secure, self.options.require_dp_noise)

    def _train(
        self,
        message: TaskMessage,
        task: Payload,
        *,
        strategy: ClientStrategy[Any],
        trainer: LocalTrainer,
        local_state: Payload,
        local_dp: LocalDPClient | None,
    ) -> Payload:
        """Run the task locally; the update is stamped and the local state saved."""
        self.report(f"round {message.round}: training")
        started = time.perf_counter()
        cpu = time.process_time()
        update = strategy.run(task, local_state, trainer)
        if local_dp is not None:  # recorded before sending: a lost upload over-counts only
            local_dp.record_release(self.options.state_dir, message.round)
        self._stamp_seconds(
            update, time.perf_counter() - started, time.process_time() - cpu, len(message.data)
        )
        self.store.save_local_state(local_state)
        return update

    def _stamp_seconds(self, update: Payload, wall: float, cpu: float, down_bytes: int) -> None:
        """Put how long the task took this device on its update (simulated: the virtual clock)."""
        if self.options.simulate_device and self.profile is not None:
            stamp_task_seconds(update, cpu, down_bytes, self.profile)
        else:
            update.metrics[TASK_SECONDS] = float(wall)

    def _submit(self, task: TaskMessage, data: bytes) -> int:
        return self._retrying(
            "submit", lambda: self.connection.submit(task.task_id, task.round, data)
        )

    def _heartbeats(self) -> None:
        interval = 10.0
        while not self._stop.wait(interval):
            try:
                profile = self._profile_message() if self._profile_dirty else None
                response = self.connection.heartbeat(profile)
                interval = max(response.heartbeat_interval_ms / 1000.0, 0.5)
            except grpc.RpcError as exc:
                logger.debug("heartbeat failed: %s", exc.code())
            except ValueError:  # the channel was closed under us at shutdown
                return
