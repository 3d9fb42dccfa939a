"""The in-process engine's ``--secagg`` rounds: every participant runs SecAgg+ for real.

Each virtual device measures its own update vector and shows only its public metrics; the
round's vectors then go through the whole protocol (``privacy.secagg.simulate.secure_sum``:
signed keys, sealed shares, masks, unmasking), and the server applies the decoded mean. The
protocol's messages are counted at their wire size into the round's bytes and each client's
record, and their CPU time into each client's seconds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, ClientStrategy, Failure, LinearUpdates, Result, Task
from fedft.core.trainer import Trainer
from fedft.privacy.secagg.errors import SecAggError
from fedft.privacy.secagg.linear import (
    DeviceInput,
    apply_sum,
    device_input,
    dp_of,
    encoding_clip,
    linear_of,
    public_problem,
    secure_encoding,
    task_weights,
)
from fedft.privacy.secagg.settings import SecAggSettings
from fedft.privacy.secagg.simulate import secure_sum

logger = logging.getLogger(__name__)


class SecureRounds:
    """Holds one round's device inputs and runs the protocol over them at aggregation."""

    def __init__(
        self,
        server_half: Any,
        client_half: ClientStrategy[Any],
        settings: SecAggSettings,
        *,
        session: str,
        seed: int,
    ) -> None:
        self.server_half = server_half  # the strategy, or the DP wrapper around it
        self.linear: LinearUpdates[Any] = linear_of(server_half)
        self.dp = dp_of(server_half)
        self.client_half = client_half
        self.settings = settings
        self.session = session
        self.seed = seed
        self._weights: dict[str, float] = {}
        self._inputs: dict[str, DeviceInput] = {}
        self._clip = 0.0  # the round's coordinate clip, fixed in begin()

    def begin(self, tasks: Sequence[Task], offered: Sequence[ClientInfo]) -> None:
        """Fix the round's weights before anyone trains: from what each device reported."""
        chosen = {t.client_id for t in tasks}
        self._weights = task_weights(
            self.linear,
            [c for c in offered if c.client_id in chosen],
            equal=self.dp is not None,
        )
        self._clip = encoding_clip(self.settings, self.linear, l2_clip=self._l2_clip())
        self._inputs = {}

    def _l2_clip(self) -> float:
        """Under central DP each device clips its update to the DP clip norm itself."""
        return self.dp.clipper.clip if self.dp is not None else 0.0

    def take(self, task: Task, down: Payload, reply: Payload, trainer: Trainer) -> Payload:
        """Keep a device's secret vector here; return what it sends in the clear."""
        entry = device_input(
            self.client_half, down, reply, trainer, self._clip, l2_clip=self._l2_clip()
        )
        self._inputs[task.client_id] = entry
        return entry.public

    def aggregate(
        self,
        server_round: int,
        results: Sequence[Result],
        failures: list[Failure],
        records: dict[str, dict[str, Any]],
    ) -> tuple[dict[str, MetricValue], int, int]:
        """Run the protocol over the round's survivors; return (metrics, bytes up, bytes down).

        Fewer than two survivors, or too few to meet the threshold, fail the round cleanly:
        nothing is applied and the next round runs.
        """
        survivors: list[Result] = []
        for result in results:
            problem = public_problem(result)
            if problem is None and result.client_id in self._inputs:
                survivors.append(result)
            else:
                failures.append(Failure(result.client_id, problem or "no secure input"))
        if self.dp is not None:
            self.dp.last_entry = None  # a round that fails releases nothing
        size = self.linear.update_size()
        zeros = np.zeros(size)
        vectors, weights = [], []
        for r in survivors:
            vector = self._inputs[r.client_id].vector
            vectors.append(zeros if vector is None else vector)
            weights.append(0.0 if vector is None else self._weights.get(r.client_id, 0.0))
        base: dict[str, MetricValue] = {"accepted": 0, "rejected": 0, "secagg_failed": 1}
        if len(survivors) < 2:
            logger.warning(
                "round %d: %d participant(s); a secure sum needs two or more, nothing applied",
                server_round,
                len(survivors),
            )
            return {**base, "failures": len(failures)}, 0, 0
        digest = hashlib.sha256(f"{self.seed}|{server_round}".encode()).digest()
        try:
            # Distributed DP fixes each device's noise share before anyone is known to
            # survive: for the round's participants, as the coordinator does.
            distributed = self.dp is not None and self.dp.dp.distributed
            encoding = secure_encoding(
                self.settings, self.server_half, len(self._weights if distributed else survivors)
            )
            total, stats = secure_sum(
                vectors,
                weights,
                encoding=encoding,
                neighbours=self.settings.neighbours,
                threshold=self.settings.threshold,
                session=self.session,
                server_round=server_round,
                seed=int.from_bytes(digest[:8], "big"),  # stochastic rounding only
            )
        except SecAggError as error:
            logger.warning("round %d: secure aggregation failed: %s", server_round, error)
            return {**base, "failures": len(failures)}, 0, 0
        for index, r in enumerate(survivors):
            record = records.setdefault(r.client_id, {})
            cpu = stats.client_cpu.get(index, 0.0)
            record["secagg_bytes"] = stats.client_bytes(index)
            record["bytes"] = record.get("bytes", 0) + record["secagg_bytes"]
            record["secagg_cpu"] = round(cpu, 6)
            record["secagg_clipped"] = self._inputs[r.client_id].clipped
            if "seconds" in record:  # the device's protocol work is part of its round
                record["seconds"] = round(record["seconds"] + cpu, 4)
        cfg = stats.config
        extra: dict[str, MetricValue] = {
            "secagg_neighbours": cfg.neighbours,
            "secagg_threshold": cfg.threshold,
            "secagg_frac_bits": encoding.frac_bits,
            "secagg_server_cpu": round(stats.server_cpu, 6),
        }
        metrics = apply_sum(
            self.server_half,
            server_round,
            survivors,
            total,
            stats.total_weight,
            failures=failures,
            encoding=encoding,
            extra=extra,
        )
        self._inputs = {}
        return metrics, sum(stats.sent.values()), sum(stats.received.values())
