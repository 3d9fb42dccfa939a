"""``fedft serve --secagg``: every round's updates reach the coordinator only as a secure sum.

A round opens as in the synchronous coordinator, and each task carries its participant's
:class:`SecureTask` (protocol id, weight, encoding, graph degree, threshold). The stages then
run as phases of the round (``SecureRound``): keys and shares through ``SecAggStep``, the
masked input as the task's update (stored durably, like any update), then the unmask
exchange. The round closes with the decoded mean applied through the strategy's
``apply_update``, or, if the protocol cannot finish, with nothing applied and
``secagg_failed: 1``; the next round runs either way. A coordinator restarted mid-round has
lost the round's secrets (held in memory only, by design): that round fails the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from fedft.core.errors import ProtocolError
from fedft.core.payload import MetricValue, Payload
from fedft.core.serde import payload_from_bytes, payload_to_bytes
from fedft.core.strategy import ClientInfo, Failure, LinearUpdates, Result, Task
from fedft.core.wrapper import without_prefix
from fedft.privacy.secagg.errors import EncodingOverflowError
from fedft.privacy.secagg.linear import (
    apply_sum,
    linear_of,
    public_problem,
    secure_encoding,
    task_weights,
)
from fedft.privacy.secagg.messages import MaskedInput
from fedft.privacy.secagg.settings import SecAggSettings
from fedft.privacy.secagg.state import STATE_PREFIX, with_secagg_state
from fedft.privacy.secagg.task import MASKED, SecureTask, noise_of
from fedft.privacy.secagg.wire import masked_vector
from fedft.proto.v1 import coordinator_pb2 as pb
from fedft.server.coordinator import Coordinator
from fedft.server.intake import Intake, reject
from fedft.server.secure_round import SecureRound, Stage
from fedft.server.state.records import RoundRecord, UpdateRecord

logger = logging.getLogger(__name__)

DEFAULT_STAGE_TIMEOUT_S = 30.0


class SecureCoordinator(Coordinator):
    """The synchronous coordinator with SecAgg+ as the phases of every round."""

    def __init__(
        self,
        *args: Any,
        secagg: SecAggSettings,
        stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        self.secagg = secagg
        self.stage_timeout_s = stage_timeout_s
        self._rounds: dict[int, SecureRound] = {}
        self._unopened: dict[int, str] = {}  # rounds that opened with no secure round: why
        super().__init__(*args, **kwargs)
        linear = linear_of(self.server_half)  # inside the DP wrapper under central DP
        if not isinstance(linear, LinearUpdates):
            raise TypeError("--secagg needs a LinearUpdates strategy")
        self.linear: LinearUpdates[Any] = linear

    # --- start-up hooks ------------------------------------------------------------------------
    def _resume_secagg(self, stored: SecAggSettings | None) -> None:
        """A run keeps its secure aggregation for life; its stored settings win."""
        if stored is None:
            raise ValueError(
                "this database holds a run without secure aggregation: restart it without --secagg"
            )
        if stored != self.secagg:
            logger.warning("resuming with the run's stored secure aggregation settings")
            self.secagg = stored

    def _checkpoint(self) -> bytes:
        """The server half's checkpoint plus the run's secure aggregation settings."""
        return payload_to_bytes(with_secagg_state(self.server_half.state_dict(), self.secagg))

    def _load_checkpoint(self, data: bytes) -> None:
        """Restore the server half, leaving out the secure aggregation settings."""
        inner = without_prefix(payload_from_bytes(data), STATE_PREFIX)
        super()._load_checkpoint(payload_to_bytes(inner))

    def _new_intake(self, check: Callable[[int, Result], str | None]) -> Intake:
        """Updates are masked inputs: checked against the round's protocol, not the strategy."""
        return Intake(self.state, self._lock, self._changed, self.clock, self._check_masked)

    # --- opening a round -----------------------------------------------------------------------
    def _prepare(self, number: int, tasks: list[Task], infos: list[ClientInfo]) -> list[Task]:
        """Give each task its participant's secure aggregation parameters (lock held)."""
        if len(tasks) < 2:
            # A sum of one is that one's update: no secure round runs with fewer than two.
            self._unopened[number] = f"{len(tasks)} participant(s); a secure sum needs two"
            logger.debug("round %d: %s", number, self._unopened[number])
            return []
        chosen = {t.client_id for t in tasks}
        dp = self.dp_server
        weights = task_weights(
            self.linear, [i for i in infos if i.client_id in chosen], equal=dp is not None
        )
        ids = {cid: pid for pid, cid in enumerate(sorted(chosen))}
        l2_clip = dp.clipper.clip if dp is not None else 0.0
        try:
            encoding = secure_encoding(self.secagg, self.server_half, len(ids))
        except EncodingOverflowError as exc:
            self._unopened[number] = str(exc)
            logger.warning("round %d: no secure round runs: %s", number, exc)
            return []
        variance, survivors = noise_of(encoding)
        template = SecureTask(
            session=self.run.run_id,  # binds every key and mask to this run
            round=number,
            participants=len(ids),
            me=0,
            length=self.linear.update_size(),
            ring_bits=encoding.ring_bits,
            frac_bits=encoding.frac_bits,
            clip=encoding.clip,
            neighbours=self.secagg.neighbours,
            threshold=self.secagg.threshold,
            weight=0.0,
            l2_clip=l2_clip,
            variance=variance,
            survivors=survivors,
        )
        prepared = []
        for task in tasks:
            mine = dataclasses.replace(
                template, me=ids[task.client_id], weight=weights[task.client_id]
            )
            payload = task.payload
            config = {**payload.config, **mine.to_config()}
            prepared.append(Task(task.client_id, Payload(payload.tensors, config, payload.metrics)))
        identities = {pid: self.clients.public_key(cid) or b"" for cid, pid in ids.items()}
        self._rounds = {
            number: SecureRound(
                template.round_config(),
                ids,
                identities,
                now=self.clock(),
                stage_timeout_s=self.stage_timeout_s,
            )
        }
        return prepared

    # --- client calls --------------------------------------------------------------------------
    def secagg_step(
        self, client_id: str, request: pb.SecAggStepRequest, wait_s: float
    ) -> pb.SecAggStepResponse:
        """Take a participant's stage message, then wait up to ``wait_s`` for what it hears next."""
        task = self.intake.owned_task(
            self.state.get_task(request.task_id), client_id, request.task_id, request.round
        )
        until = self.clock() + max(0.0, wait_s)
        with self._changed:
            secure = self._rounds.get(task.round)
            if secure is None:
                raise reject("stale", "stale", f"round {task.round} has no secure sum running")
            pid = secure.ids[client_id]
            try:
                secure.receive(pid, request)
            except ProtocolError as exc:
                raise reject("invalid", "secagg", str(exc)) from None
            self._changed.notify_all()  # the round loop may close the stage now
            while True:
                masked = task.task_id in self.intake.round_index(task.round).answered
                reply = secure.reply_for(pid, masked=masked)
                remaining = until - self.clock()
                if reply is not None or remaining <= 0 or self._stop.is_set():
                    break
                self._changed.wait(min(remaining, 1.0))
        if reply is None:
            return pb.SecAggStepResponse(wait=pb.SecAggWait(retry_after_ms=200))
        return reply

    def _check_masked(self, number: int, result: Result) -> str | None:
        """Why a masked input cannot join round ``number``'s sum, or None (lock held)."""
        secure = self._rounds.get(number)
        if secure is None:
            return "this round has no secure sum running"
        pid = secure.ids.get(result.client_id)
        if pid is None or not secure.takes_masked(pid):
            return "the masked-input stage is not open to you"
        public = Result(
            result.client_id,
            Payload(config=result.payload.config, metrics=result.payload.metrics),
        )
        problem = public_problem(public)
        if problem is not None:
            return problem
        if set(result.payload.tensors) != {MASKED}:
            return f"a masked input carries exactly one tensor, {MASKED!r}"
        try:
            masked_vector(
                result.payload.tensors[MASKED],
                secure.config.encoding,
                secure.config.length,
            )
        except ProtocolError as exc:
            return str(exc)
        return None

    # --- the round loop ------------------------------------------------------------------------
    def _round_complete(self, current: RoundRecord) -> bool:
        """Close stages as they finish; the round is complete once its sum is (or failed)."""
        with self._lock:
            secure = self._rounds.get(current.round)
            if secure is None:  # restarted mid-round, or fewer than two participants
                return True
            now = self.clock()
            if secure.stage is Stage.MASKED and now >= current.deadline:
                self._close_masked(current.round, secure)
                self._changed.notify_all()
            while secure.stage is not Stage.DONE:
                index = self.intake.round_index(current.round)
                if not secure.ready(now, len(index.answered)):
                    break
                if secure.stage is Stage.MASKED:
                    self._close_masked(current.round, secure)
                else:
                    secure.advance(now)
                self._changed.notify_all()  # clients waiting in secagg_step hear the news
            return secure.stage is Stage.DONE

    def _close_masked(self, number: int, secure: SecureRound) -> None:
        """Stop taking masked inputs, then close stage 3 with the stored ones (lock held)."""
        # Every admitted input is stored before we read them (close_begins waits for them).
        self.intake.close_begins(number)
        masked: dict[int, MaskedInput] = {}
        for update in self.state.updates_for_round(number):
            pid = secure.ids[update.client_id]
            payload = payload_from_bytes(self.state.get_blob(update.payload_sha))
            vector = masked_vector(
                payload.tensors[MASKED], secure.config.encoding, secure.config.length
            )
            masked[pid] = MaskedInput(pid, vector)
            secure.publics[update.client_id] = dict(payload.metrics)
        secure.advance(self.clock(), masked)

    def _aggregate(
        self, number: int, updates: list[UpdateRecord], failures: list[Failure]
    ) -> dict[str, MetricValue]:
        """Apply the round's decoded secure sum, or nothing if it failed (lock held)."""
        secure = self._rounds.pop(number, None)
        failed: dict[str, MetricValue] = {"accepted": 0, "rejected": 0, "secagg_failed": 1}
        if self.dp_server is not None:
            self.dp_server.last_entry = None  # a round that fails releases nothing
        if secure is None or secure.result is None:
            if secure is None:
                why = self._unopened.pop(number, "the coordinator restarted mid-round")
            else:
                why = secure.failed
            logger.warning("round %d: nothing applied: %s", number, why or "too few participants")
            return {**failed, "failures": len(failures)}
        aggregate = secure.result
        total, weight = aggregate.decode()
        by_pid = {pid: cid for cid, pid in secure.ids.items()}
        survivors = [by_pid[pid] for pid in aggregate.survivors]
        publics = [Result(cid, Payload(metrics=secure.publics[cid])) for cid in survivors]
        extra: dict[str, MetricValue] = {
            "secagg_neighbours": secure.config.neighbours,
            "secagg_threshold": secure.config.threshold,
            "secagg_frac_bits": secure.config.encoding.frac_bits,
        }
        return apply_sum(
            self.server_half,
            number,
            publics,
            total,
            weight,
            failures=failures,
            encoding=secure.config.encoding,
            extra=extra,
        )
