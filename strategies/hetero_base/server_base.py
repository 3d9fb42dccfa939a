"""Server skeleton of the heterogeneous strategies: sampling, per-device layouts, checks."""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import torch

from fedft.core.device import DeviceProfile
from fedft.core.layout import layer_of
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, Failure, Result, ServerStrategy, Task
from fedft.strategies.hetero_base.aggregate import Factor
from fedft.strategies.hetero_base.config import HeteroLoRAConfig
from fedft.strategies.hetero_base.layout import Layout
from fedft.strategies.hetero_base.modules import split_modules

logger = logging.getLogger(__name__)

C = TypeVar("C", bound=HeteroLoRAConfig)

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def speed_rank(step_s: float, fastest_s: float, min_rank: int, max_rank: int) -> int:
    """Rank proportional to relative speed, rounded to even, within [min_rank, max_rank]."""
    x = max_rank * fastest_s / step_s if step_s > 0 else max_rank
    r = 2 * round(x / 2) if x >= 2 else round(x)
    return max(min_rank, min(max_rank, r))


class HeteroServerBase(ServerStrategy[C]):
    """Plans a layout per sampled device, sends it its factors, checks and folds the updates.

    Subclasses decide the layouts (:meth:`plan`), the factors a layout receives
    (:meth:`client_tensors`) and the aggregation (:meth:`fold`).
    """

    def __init__(self, config: C, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.a_init: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        self.layers: list[int] = []
        self.last_plan: dict[str, Layout] = {}
        self.plan_round = 0  # the round last_plan belongs to (0: none, e.g. after a restart)

    # --- hooks -------------------------------------------------------------------------------
    @abstractmethod
    def plan(self, clients: Sequence[ClientInfo]) -> dict[str, Layout]:
        """Choose each sampled client's layout."""

    @abstractmethod
    def client_tensors(self, layout: Layout) -> dict[str, torch.Tensor]:
        """The adapter tensors a device with ``layout`` starts its local training from."""

    @abstractmethod
    def fold(self, updates: Iterable[tuple[dict[str, Factor], float]]) -> dict[str, MetricValue]:
        """Aggregate ``(modules -> (B, A, scale), weight)`` pairs into the global state."""

    # --- shared --------------------------------------------------------------------------------
    def _learn_modules(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take module names, shapes and PEFT's initial A from a full-depth adapter."""
        modules = split_modules(tensors)
        self._set_modules(
            {m: a for m, (_, a) in modules.items()},
            {m: int(b.shape[0]) for m, (b, _) in modules.items()},
        )

    def _set_modules(self, a_init: Mapping[str, torch.Tensor], d_out: Mapping[str, int]) -> None:
        self.a_init = {m: a.detach().to(torch.float32).clone() for m, a in a_init.items()}
        self.shapes = {m: (d_out[m], int(a.shape[1])) for m, a in a_init.items()}
        self.layers = sorted({layer_of(m) for m in a_init})

    def speed_ranks(self, clients: Sequence[ClientInfo]) -> dict[str, int]:
        """Each client's rank from its full-depth step time relative to the fastest device's.

        Devices without a profile get ``max_rank``.
        """
        cfg = self.config
        profiles = self.profiles(clients)
        depth = len(self.layers)
        steps = {cid: p.step_seconds(depth) for cid, p in profiles.items() if p is not None}
        fastest = min(steps.values(), default=0.0)
        out = {}
        for c in clients:
            step = steps.get(c.client_id)
            out[c.client_id] = (
                cfg.max_rank
                if step is None
                else speed_rank(step, fastest, cfg.min_rank, cfg.max_rank)
            )
        return out

    def layer_width(self) -> dict[int, int]:
        """Per layer, ``sum (d_in + d_out)`` over its adapted modules: parameters per unit rank."""
        width: dict[int, int] = {}
        for module, (d_out, d_in) in self.shapes.items():
            layer = layer_of(module)
            width[layer] = width.get(layer, 0) + d_out + d_in
        return width

    def scale(self, rank: int) -> float:
        """PEFT's LoRA scale for a module of rank ``rank``."""
        return self.config.alpha / rank

    def profiles(self, clients: Sequence[ClientInfo]) -> dict[str, DeviceProfile | None]:
        """Each client's device profile from its properties (None where it sent none)."""
        return {c.client_id: DeviceProfile.from_properties(c.properties) for c in clients}

    def configure(self, server_round: int, clients: Sequence[ClientInfo]) -> list[Task]:
        """Sample clients, plan their layouts and send each its own factors."""
        if not self.shapes:
            raise RuntimeError("initialize() or load_state_dict() must run before configure()")
        chosen = self.config.sample(clients, seed=self.seed, server_round=server_round)
        self.last_plan = self.plan(chosen)
        self.plan_round = server_round
        tasks = []
        for c in chosen:
            layout = self.last_plan[c.client_id]
            config = {
                **self.config.task_config(
                    seed=self.seed, server_round=server_round, client_id=c.client_id
                ),
                **layout.to_config(),
            }
            tasks.append(
                Task(c.client_id, Payload(tensors=self.client_tensors(layout), config=config))
            )
        return tasks

    def _factors(self, result: Result) -> dict[str, Factor]:
        return {
            m: (b, a, self.scale(int(a.shape[0])))
            for m, (b, a) in split_modules(result.payload.tensors).items()
        }

    def aggregate(
        self, server_round: int, results: Iterable[Result], failures: Sequence[Failure]
    ) -> dict[str, MetricValue]:
        """Fold every valid update; refused ones are logged and counted."""
        counts = {"accepted": 0, "rejected": 0}
        loss = {"sum": 0.0, "weight": 0.0}

        def valid() -> Iterable[tuple[dict[str, Factor], float]]:
            for result in results:
                problem = self.check_update(server_round, result)
                if problem is not None:
                    logger.warning(
                        "round %d: rejected %s: %s", server_round, result.client_id, problem
                    )
                    counts["rejected"] += 1
                    continue
                weight = float(result.payload.metrics["num_examples"])
                counts["accepted"] += 1
                train_loss = float(result.payload.metrics.get("train_loss", math.nan))
                loss["sum"] += weight * train_loss
                loss["weight"] += weight
                factors = self._factors(result)
                self.observe_update(result, factors)
                yield factors, weight

        metrics: dict[str, MetricValue] = dict(self.fold(valid()))
        metrics.update(counts)
        metrics["failures"] = len(failures)
        if loss["weight"] > 0:
            metrics["train_loss"] = loss["sum"] / loss["weight"]
        return metrics

    def observe_update(self, result: Result, factors: Mapping[str, Factor]) -> None:
        """See one accepted update before it is folded (the global state is still the old one)."""

    def check_update(self, server_round: int, result: Result) -> str | None:
        """Refuse updates with unknown modules, wrong shapes, ranks out of range or NaN/Inf."""
        weight = result.payload.metrics.get("num_examples", 0)
        if not (isinstance(weight, int) and weight > 0):
            return f"num_examples must be a positive int, got {weight!r}"
        try:
            modules = split_modules(result.payload.tensors)
        except ValueError as exc:
            return str(exc)
        if not modules:
            return "the update carries no adapter"
        for module, (b, a) in modules.items():
            problem = self._module_problem(module, b, a)
            if problem is not None:
                return problem
        layout = self.last_plan.get(result.client_id) if server_round == self.plan_round else None
        return self._layout_problem(layout, modules) if layout is not None else None

    def _layout_problem(
        self, layout: Layout, modules: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> str | None:
        """An update must cover exactly the layers its task assigned, at the assigned ranks.

        Otherwise a client could weigh in on layers it was not given. The plan lives in memory:
        after a coordinator restart, updates of the open round get the checks above only.
        """
        expected = {m for m in self.shapes if layout.rank_of(layer_of(m)) is not None}
        if set(modules) != expected:
            extra, missing = sorted(set(modules) - expected), sorted(expected - set(modules))
            return (
                f"the update does not match its assigned layers {list(layout.layers)}: "
                f"unexpected {extra[:2]}, missing {missing[:2]}"
            )
        for module, (_, a) in modules.items():
            assigned = layout.rank_of(layer_of(module))
            if int(a.shape[0]) != assigned:
                return f"{module}: rank {int(a.shape[0])}, but the task assigned rank {assigned}"
        return None

    def _module_problem(self, module: str, b: torch.Tensor, a: torch.Tensor) -> str | None:
        shape = self.shapes.get(module)
        if shape is None:
            return f"{module} is not an adapted module of the global model"
        rank = int(a.shape[0])
        if (int(b.shape[0]), int(a.shape[1])) != shape:
            return f"{module}: factors do not match the module's shape {shape}"
        if not 1 <= rank <= self.config.max_rank:
            return f"{module}: rank {rank} is outside [1, {self.config.max_rank}]"
        # Finite in float32, the global model's dtype, not just in the dtype sent: 1e300 in
        # float64 is finite and becomes +inf once aggregated (defect 3 of issue 14).
        if not all(
            t.is_floating_point() and bool(torch.isfinite(t.to(torch.float32)).all())
            for t in (a, b)
        ):
            return f"{module}: factors must be finite floating-point tensors"
        # |B @ A| <= rank * max|B| * max|A|: the product must stay finite in float32 too.
        peak = rank * float(b.abs().max().double()) * float(a.abs().max().double())
        if b.numel() and a.numel() and not peak < FLOAT32_MAX:
            return f"{module}: factors too large, B @ A would overflow float32"
        return None
