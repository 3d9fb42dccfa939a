"""``fedft simulate --engine flower``: the same simulation on Flower's Ray-backed engine.

Flower's simulation runtime starts Ray (or joins a running cluster), registers one virtual
SuperNode per client and runs our ClientApp in a pool of Ray actors, as many as the client
resources allow (``--cpus-per-client``, ``--gpus-per-client``). The ServerApp runs in this
process, so the report is written here, after every round, by the same code as the others.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from fedft.core.errors import UsageError
from fedft.simulation.engine import ProgressFn, no_progress
from fedft.simulation.flower import ensure_flower
from fedft.simulation.report import Report
from fedft.simulation.spec import SimulationSpec

FLOWER_LOG_LEVEL = "WARNING"  # Flower logs every round at INFO; our progress bar says enough


def backend_config(spec: SimulationSpec) -> dict[str, Any]:
    """Flower's Ray backend settings for ``spec``: client resources and how to start Ray.

    A local Ray gets only the CPUs the clients can use (never more than this machine has). With
    ``--ray-address`` (or ``RAY_ADDRESS``) Ray joins that cluster, which decides its own size.
    """
    resources: dict[str, float] = {"num_cpus": spec.cpus_per_client}
    init: dict[str, Any] = {"logging_level": FLOWER_LOG_LEVEL, "log_to_driver": False}
    if spec.gpus_per_client > 0:
        resources["num_gpus"] = spec.gpus_per_client
    address = spec.ray_address or os.environ.get("RAY_ADDRESS", "")
    if address:
        init["address"] = address
    else:
        # "local" starts a fresh Ray even when `ray start` left a cluster on this machine, which
        # a bare ray.init() would try to join (and refuse, since num_cpus is given).
        init["address"] = "local"
        wanted = math.ceil(spec.clients * spec.cpus_per_client)
        init["num_cpus"] = max(1, min(wanted, os.cpu_count() or 1))
        if spec.gpus_per_client > 0:
            import torch

            init["num_gpus"] = torch.cuda.device_count()
            if init["num_gpus"] == 0:
                # Ray would build an empty actor pool and Flower would fail obscurely.
                raise UsageError("--gpus-per-client needs a CUDA GPU, and torch sees none here")
    return {"client_resources": resources, "init_args": init}


class FlowerEngine:
    """Runs a registered strategy over N virtual Flower SuperNodes on Ray."""

    def __init__(self, spec: SimulationSpec, *, progress: ProgressFn = no_progress):
        ensure_flower()
        from fedft.simulation.flower.server_app import FlowerServer

        self.spec = spec
        self.backend = backend_config(spec)  # checks the resources before any model loads
        self._progress = progress
        self.server = FlowerServer(spec, progress=progress)

    @property
    def audit_result(self) -> dict[str, Any] | None:
        """The privacy audit of a DP run (None otherwise), as the other engines expose it."""
        return self.server.audit_result

    @property
    def progress(self) -> ProgressFn:
        """The progress callback (the console swaps it in after construction)."""
        return self._progress

    @progress.setter
    def progress(self, value: ProgressFn) -> None:
        self._progress = value
        self.server.progress = value

    def run(self) -> Report:
        """Run all rounds on Flower's engine; returns the report (also written to disk)."""
        from flwr.simulation import run_simulation

        from fedft.simulation.flower.client_app import make_client_app
        from fedft.simulation.flower.server_app import make_server_app

        self.progress("round", 0, self.spec.rounds)
        _quiet_flower()
        # Keep Ray's current handling of CUDA_VISIBLE_DEVICES for CPU-only clients, silently.
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        run_simulation(
            server_app=make_server_app(self.server),
            client_app=make_client_app(self.spec),
            num_supernodes=self.spec.clients,
            backend_config=self.backend,
        )
        if len(self.server.report.rounds) != self.spec.rounds:
            raise RuntimeError(
                f"Flower stopped after {len(self.server.report.rounds)} of {self.spec.rounds} "
                "rounds; see its log above"
            )
        return self.server.finish()


def _quiet_flower() -> None:
    """Keep Flower's per-round lines and its deprecation banner off the progress display.

    ``run_simulation`` is deprecated in favour of ``flwr run`` but remains the one in-process
    entry point that takes app objects and Ray settings; errors still show.
    """
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.setLevel(logging.ERROR)
    flwr_logger.propagate = False
