"""The server side of a Flower run: the hosted strategy, central evaluation and ``report.json``.

``FlowerServer`` is shared by ``fedft simulate --engine flower`` and by the example Flower app
(``flwr run``): it evaluates the global model after every round with the same evaluator as the
other engines and writes the same report, so a Flower run's report compares line by line.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.app import Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedft.core.strategy import ClientStrategy, ServerStrategy
from fedft.runtime.evaluation import held_out_loss
from fedft.runtime.models import load_model
from fedft.runtime.trainer import LocalTrainer
from fedft.simulation.data_split import split_data
from fedft.simulation.engine import ProgressFn, _no_progress, build_strategy, finish_report
from fedft.simulation.flower.run_config import spec_from_run_config
from fedft.simulation.flower.strategy import FedftStrategy
from fedft.simulation.report import Report, RoundRecord
from fedft.simulation.spec import SimulationSpec


class FlowerServer:
    """Hosts one run's server half in Flower and keeps its report."""

    def __init__(
        self,
        spec: SimulationSpec,
        *,
        progress: ProgressFn = _no_progress,
        node_wait_s: float = 300.0,
        timeout_s: float = 3600.0,
    ) -> None:
        self.spec = spec
        self.progress = progress
        self.timeout_s = timeout_s
        strategy, self.config = build_strategy(spec)
        data = split_data(spec)
        self.eval_set, self.rouge_set = data.eval_set, data.rouge_set
        self.bundle = load_model(spec.model)
        self.client_half: ClientStrategy[Any] = strategy.client_cls(self.config)
        self.server_half: ServerStrategy[Any] = strategy.server_cls(self.config, seed=spec.seed)
        self.evaluator = LocalTrainer(self.bundle, [], max_length=spec.max_length)
        self.client_half.prepare(self.evaluator)
        self.strategy = FedftStrategy(
            self.server_half, min_nodes=spec.clients, node_wait_s=node_wait_s, timeout_s=timeout_s
        )
        self.report = Report(
            strategy=spec.strategy, model=spec.model, clients=spec.clients, seed=spec.seed,
            dataset=spec.dataset, partition=spec.partition, engine="flower",
            config=self.config.to_dict(),
        )  # fmt: skip

    def _evaluate(self) -> float:
        self.client_half.load_global(self.server_half.global_state(), self.evaluator)
        return held_out_loss(self.bundle, self.eval_set, max_length=self.spec.max_length).loss

    def after_round(self, server_round: int, arrays: object) -> MetricRecord:
        """Flower's ``evaluate_fn``: score the global model, then record and write the round."""
        loss = self._evaluate()
        if server_round == 0:
            self.report.initial = {"eval_loss": loss}
        else:
            traffic = self.strategy.traffic[server_round]
            # Flower hands back a round's replies all at once, so the client bar jumps to full.
            self.progress("client", traffic.participants, traffic.participants)
            metrics = self.strategy.round_metrics.pop(server_round, {})
            self.report.rounds.append(
                RoundRecord(
                    round=server_round,
                    eval_loss=loss,
                    bytes_up=traffic.up,
                    bytes_down=traffic.down,
                    participants=traffic.participants,
                    seconds=round(time.perf_counter() - traffic.started, 3),
                    metrics=metrics,
                )
            )
        self.report.write(self.spec.out)
        self.progress("round", server_round, self.spec.rounds)
        return MetricRecord({"eval_loss": loss})

    def main(self, grid: Grid, context: Context) -> None:
        """The ServerApp's body: initialise the plugin, then let Flower run the rounds."""
        self.server_half.initialize(self.client_half.initial_state(self.evaluator))
        self.strategy.start(
            grid=grid,
            initial_arrays=self.strategy.global_arrays(),
            num_rounds=self.spec.rounds,
            timeout=self.timeout_s,
            evaluate_fn=self.after_round,
        )

    def finish(self) -> Report:
        """Score the final model (Rouge-L), save the adapter, write the final report."""
        return finish_report(self.report, self.spec, self.evaluator, self.rouge_set, self.progress)


def make_server_app(server: FlowerServer | None = None) -> ServerApp:
    """Build the ServerApp; without ``server`` it builds one from the run config (``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        host = server or FlowerServer(spec_from_run_config(context.run_config))
        host.main(grid, context)
        if server is None:
            host.finish()  # under `flwr run` nobody else will

    return app
