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

from fedft.core.strategy import ServerStrategy
from fedft.privacy.ledger import LEDGER_FILE
from fedft.privacy.local import CLIENTS_DIR
from fedft.privacy.run_dir import RunRecorder, audit_run_folder
from fedft.runtime.assembly import assemble_client
from fedft.runtime.server_assembly import assemble_server
from fedft.simulation.availability import report_entry, simulation_availability
from fedft.simulation.data_split import split_data
from fedft.simulation.engine import ProgressFn, finish_report, no_progress
from fedft.simulation.flower.run_config import spec_from_run_config
from fedft.simulation.flower.strategy import FedftStrategy
from fedft.simulation.report import Report, RoundReport
from fedft.simulation.spec import SimulationSpec


class FlowerServer:
    """Hosts one run's server half in Flower and keeps its report."""

    def __init__(
        self,
        spec: SimulationSpec,
        *,
        progress: ProgressFn = no_progress,
        node_wait_s: float = 300.0,
        timeout_s: float = 3600.0,
    ) -> None:
        self.spec = spec
        self.progress = progress
        self.timeout_s = timeout_s
        run = spec.run_spec()
        data = split_data(spec)
        self.eval_set, self.rouge_set = data.eval_set, data.rouge_set
        # The same assembly as every other host: model, quantization, device, DP wrapper.
        self.runtime = assemble_client(run)
        self.config = self.runtime.config
        server = assemble_server(run)
        self.server_half: ServerStrategy[Any] = server.server_half
        self.dp_server = server.dp
        self.recorder = RunRecorder(spec.out) if self.dp_server is not None else None
        self.audit_result: dict[str, Any] | None = None
        self.evaluator = self.runtime.evaluator
        # The same availability model as the other engines, over the same split.
        self.availability = simulation_availability(spec.availability, spec.seed, data.clients)
        self.strategy = FedftStrategy(
            self.server_half,
            min_nodes=spec.clients,
            node_wait_s=node_wait_s,
            timeout_s=timeout_s,
            availability=self.availability.available if self.availability.simulated else None,
        )
        self.report = Report(
            strategy=spec.strategy, model=spec.model, clients=spec.clients, seed=spec.seed,
            dataset=spec.dataset, partition=spec.partition, engine="flower",
            config=self.config.to_dict(), memory=self.runtime.memory,
            device=self.runtime.device_name,
            availability=report_entry(self.availability, spec.availability),
            participation=spec.participation,
        )  # fmt: skip

    def _evaluate(self) -> float:
        return self.runtime.evaluate(self.server_half.global_state(), self.eval_set)

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
            if self.recorder is not None and self.dp_server is not None:
                self.recorder.after_round(self.dp_server)
            self.report.rounds.append(
                RoundReport(
                    round=server_round,
                    eval_loss=loss,
                    bytes_up=traffic.up,
                    bytes_down=traffic.down,
                    participants=traffic.participants,
                    seconds=round(time.perf_counter() - traffic.started, 3),
                    metrics=metrics,
                    available=self.strategy.available.pop(server_round, None),
                )
            )
        self.report.write(self.spec.out)
        self.progress("round", server_round, self.spec.rounds)
        return MetricRecord({"eval_loss": loss})

    def main(self, grid: Grid, context: Context) -> None:
        """The ServerApp's body: initialise the plugin, then let Flower run the rounds."""
        for stale in (self.spec.out / CLIENTS_DIR).glob(f"*/{LEDGER_FILE}"):
            stale.unlink()  # an earlier run's releases are not this run's
        if self.recorder is not None:
            self.recorder.start()
        self.server_half.initialize(self.runtime.initial_state())
        self.strategy.start(
            grid=grid,
            initial_arrays=self.strategy.global_arrays(),
            num_rounds=self.spec.rounds,
            timeout=self.timeout_s,
            evaluate_fn=self.after_round,
        )

    def finish(self) -> Report:
        """Score the final model (Rouge-L), save the adapter, write the final report."""
        report = finish_report(
            self.report,
            self.spec,
            self.evaluator,
            self.rouge_set,
            self.progress,
            clients_dir=self.spec.out / CLIENTS_DIR,
        )
        if self.recorder is not None:
            self.audit_result = audit_run_folder(self.spec.out)
        return report


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
