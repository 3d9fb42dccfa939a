"""Asynchronous buffered aggregation (FedBuff, Nguyen et al., AISTATS 2022) around any strategy.

A host in ``--mode async`` does not run rounds. Whenever a client is free it gets a task built
from the global model as it is at that moment (:meth:`BufferedAggregator.dispatch`); whenever a
client hands in its update, the update joins a buffer (:meth:`BufferedAggregator.submit`), and
every ``buffer`` accepted updates the buffer is applied as one new global version.

Staleness is how many versions were applied between a task's dispatch and its update's arrival.
An update of staleness ``s`` counts ``1 / sqrt(1 + s)`` times its usual weight (FedBuff's
polynomial discount with exponent 1/2); one staler than ``max_staleness`` is refused. The
applied change is ``sum_i n_i d(s_i) v_i / sum_i n_i``: the discount is not normalised away, so
an all-stale buffer moves the model less than a fresh one, as in the paper's
``(1/K) sum_i d(s_i) v_i``. The strategy is driven through its :class:`LinearUpdates` methods,
with one monotonic counter as their ``server_round``: each dispatch takes the next value (its
ticket: task seeds and the strategy's per-task bookkeeping key on it) and so does each applied
buffer (the new version's number), so every number the strategy sees is fresh and increasing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from fedft.core.async_options import AsyncSettings, staleness_weight
from fedft.core.errors import UsageError
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, LinearUpdates, Result, ServerStrategy, Task

# Checkpoint entries a host in --mode async adds beside the strategy's own.
STATE_PREFIX = "async."
_SETTINGS_KEY = STATE_PREFIX + "settings"
_COUNTER_KEY = STATE_PREFIX + "counter"


def with_async_state(state: Payload, settings: AsyncSettings, counter: int) -> Payload:
    """``state`` plus the async settings and the aggregator's counter, for a durable checkpoint."""
    config = dict(state.config)
    config[_SETTINGS_KEY] = json.dumps(
        {"buffer": settings.buffer, "max_staleness": settings.max_staleness}
    )
    config[_COUNTER_KEY] = counter
    return Payload(tensors=dict(state.tensors), config=config, metrics=dict(state.metrics))


def async_from_state(state: Payload) -> tuple[AsyncSettings, int] | None:
    """The async settings and counter a checkpoint was taken with (None: a synchronous run)."""
    text = state.config.get(_SETTINGS_KEY)
    if not isinstance(text, str):
        return None
    counter = state.config.get(_COUNTER_KEY, 0)
    return AsyncSettings(**json.loads(text)), int(counter) if isinstance(counter, int) else 0


def describe(settings: AsyncSettings) -> str:
    """The flags that give ``settings``, as a user would type them."""
    return f"--mode async --buffer {settings.buffer} --max-staleness {settings.max_staleness}"


def check_async(server_half: ServerStrategy[Any], *, name: str = "") -> LinearUpdates[Any]:
    """Return ``server_half`` if it can run asynchronously; else raise a one-line UsageError."""
    label = name or type(server_half).__name__
    least = getattr(getattr(server_half, "config", None), "min_clients", 1)
    if isinstance(least, int) and least > 1:
        raise UsageError(
            f"strategy {label} cannot run with --mode async and min_clients={least}: each "
            "asynchronous task is configured for one client (use --opt min_clients=1)"
        )
    if not isinstance(server_half, LinearUpdates):
        raise UsageError(
            f"strategy {label} cannot run with --mode async: it does not expose update vectors "
            "(fedft.core.strategy.LinearUpdates); fedavg_lora, fedkseed, fedkseed_pro and "
            "ferret can"
        )
    problem = server_half.async_problem()
    if problem is not None:
        raise UsageError(f"strategy {label} cannot run with --mode async: {problem}")
    return server_half


@dataclass
class Dispatch:
    """A task handed out: its ticket, and the version of the model it was built from."""

    ticket: int
    version: int
    task: Task


@dataclass
class _Buffer:
    """The running weighted sum of the buffered updates (O(update size) memory, not O(K))."""

    total: torch.Tensor
    weight_sum: float = 0.0  # undiscounted: the discount must not cancel out
    loss_sum: float = 0.0
    count: int = 0
    staleness: list[int] = field(default_factory=list)


class BufferedAggregator:
    """Drives a :class:`LinearUpdates` server half asynchronously: dispatch, submit, apply.

    ``versions`` counts the buffers applied so far (0: the initial model); ``version_round``
    maps each to the counter value the strategy saw in its ``apply_update``.
    """

    def __init__(
        self, server_half: ServerStrategy[Any], settings: AsyncSettings, *, name: str = ""
    ) -> None:
        self.strategy: LinearUpdates[Any] = check_async(server_half, name=name)
        self.settings = settings
        self.counter = 0
        self.versions = 0
        self.version_round: dict[int, int] = {0: 0}
        self.outstanding: dict[int, int] = {}  # ticket -> version it was built from
        self.strategy.keep_versions(settings.max_staleness)
        self._buffer = self._empty()

    def _empty(self) -> _Buffer:
        return _Buffer(torch.zeros(self.strategy.update_size(), dtype=torch.float64))

    @property
    def buffered(self) -> int:
        """Updates waiting in the buffer."""
        return self._buffer.count

    def dispatch(self, client: ClientInfo) -> Dispatch | None:
        """Build a task for ``client`` from the global model as it is now (None: no task)."""
        self.counter += 1
        tasks = self.strategy.configure(self.counter, [client])
        if not tasks:
            return None
        self.outstanding[self.counter] = self.versions
        return Dispatch(self.counter, self.versions, tasks[0])

    def staleness(self, ticket: int) -> int:
        """Versions applied since the task of ``ticket`` was dispatched."""
        return self.versions - self.outstanding[ticket]

    def submit(self, ticket: int, result: Result) -> str | None:
        """Buffer ``result`` (the answer to ``ticket``); return why it was refused, or None."""
        if ticket not in self.outstanding:
            return f"no outstanding task {ticket} (answered already, expired or never sent)"
        staleness = self.staleness(ticket)
        del self.outstanding[ticket]
        if staleness > self.settings.max_staleness:
            return (
                f"stale update: trained from version {self.versions - staleness}, "
                f"{staleness} versions behind the current {self.versions} "
                f"(--max-staleness {self.settings.max_staleness})"
            )
        problem = self.strategy.check_update(ticket, result)
        if problem is not None:
            return problem
        vector = self.strategy.update_vector(ticket, result)
        if vector is None:  # e.g. a seed client asking for a full resync: nothing to add
            return None
        weight = self.strategy.update_weight(result)
        buffer = self._buffer
        buffer.total.add_(vector.to(torch.float64), alpha=weight * staleness_weight(staleness))
        buffer.weight_sum += weight
        buffer.loss_sum += weight * float(result.payload.metrics.get("train_loss", math.nan))
        buffer.count += 1
        buffer.staleness.append(staleness)
        return None

    def ready(self) -> bool:
        """Whether the buffer holds ``buffer`` updates, so :meth:`apply` is due."""
        return self._buffer.count >= self.settings.buffer

    def apply(self, *, empty_ok: bool = False) -> dict[str, MetricValue]:
        """Apply the buffered updates as the next global version; return its metrics.

        An empty buffer is an error unless ``empty_ok``: then the version is the last one.
        """
        buffer = self._buffer
        if not buffer.count and not empty_ok:
            raise RuntimeError("apply() with an empty buffer")
        self.counter += 1
        count = max(buffer.count, 1)
        metrics: dict[str, MetricValue] = {
            "accepted": buffer.count,
            "train_loss": buffer.loss_sum / buffer.weight_sum if buffer.count else math.nan,
            "staleness_mean": sum(buffer.staleness) / count,
            "staleness_max": max(buffer.staleness, default=0),
        }
        mean = buffer.total / buffer.weight_sum if buffer.count else buffer.total
        metrics.update(self.strategy.apply_update(self.counter, mean))
        self.versions += 1
        self.version_round[self.versions] = self.counter
        # Forget tasks far past the staleness cap (their clients vanished): bounded memory, while
        # a merely stale answer still gets the stale-update refusal.
        oldest = self.versions - 4 * self.settings.max_staleness - 16
        self.outstanding = {t: v for t, v in self.outstanding.items() if v >= oldest}
        self._buffer = self._empty()
        return metrics
