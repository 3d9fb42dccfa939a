"""Build a coordinator from command-line options; the one place that joins client and server."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fedft.cli.privacy_flags import (
    dp_config_from_args,
    robust_config_from_args,
    secagg_settings_from_args,
)
from fedft.cli.run_flags import async_settings_from_args
from fedft.core.config import parse_overrides
from fedft.core.errors import UsageError
from fedft.core.registry import get_strategy
from fedft.privacy.config import SECRET, check_server_wrappers
from fedft.privacy.secagg.linear import secagg_problem
from fedft.runtime.assembly import ClientRuntime, assemble_client
from fedft.runtime.spec import RunSpec, resolve_strategy
from fedft.server.async_coordinator import AsyncCoordinator
from fedft.server.coordinator import Coordinator, CoordinatorSettings
from fedft.server.secure_coordinator import DEFAULT_STAGE_TIMEOUT_S, SecureCoordinator
from fedft.server.state.factory import open_state
from fedft.strategies.buffered import check_async


@dataclass
class CoordinatorSetup:
    """A coordinator plus the host-side model it was initialised from."""

    coordinator: Coordinator
    runtime: ClientRuntime


def coordinator_setup(args: argparse.Namespace) -> CoordinatorSetup:
    """Open the state, load the model once for the initial global state, build the engine.

    The server package never imports the client runtime (tests/test_layering.py): the initial
    global state is computed here, by the client half on a host-side trainer, and handed over.
    """
    run = server_run_spec(args)
    mode = async_settings_from_args(args) if hasattr(args, "mode") else None
    if run.secagg is not None:  # said before any database or model is opened
        _check_secagg(run, args, asynchronous=mode is not None)
    if mode is not None:  # said before any database or model is opened
        spec = get_strategy(run.strategy)
        check_async(
            spec.server_cls(spec.make_config(dict(run.options)), seed=run.seed), name=run.strategy
        )
    try:
        settings = CoordinatorSettings(
            rounds=args.rounds,
            round_timeout_s=args.round_timeout,
            # A secure sum of one client would be that client's update; a distributed-DP sum
            # needs as many devices online as its noise is calibrated for.
            min_clients=max(args.min_clients, _fewest_clients(run)),
            liveness_s=args.liveness,
            heartbeat_interval_s=args.heartbeat,
            max_update_bytes=int(args.max_update_mb * (1 << 20)),
            max_num_examples=getattr(args, "max_examples", 1_000_000),
            max_update_norm=getattr(args, "max_update_norm", None),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    state = open_state(args.db)
    # The coordinator only needs the model for the initial global state and exports: CPU.
    runtime = assemble_client(dataclasses.replace(run, device="cpu"))
    try:
        host: Any = Coordinator if mode is None else partial(AsyncCoordinator, mode=mode)
        if run.secagg is not None:
            host = partial(
                SecureCoordinator,
                secagg=run.secagg,
                stage_timeout_s=getattr(args, "secagg_stage_timeout", DEFAULT_STAGE_TIMEOUT_S),
            )
        coordinator = host(
            state,
            runtime.strategy,
            dict(run.options),
            seed=run.seed,
            settings=settings,
            model=run.model,
            initial=runtime.initial_state(),
            privacy=run.dp,
            robust=run.robust,
            participation=run.participation,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return CoordinatorSetup(coordinator, runtime)


def _check_secagg(run: RunSpec, args: argparse.Namespace, *, asynchronous: bool) -> None:
    """Refuse in one line what ``--secagg`` cannot run with in the coordinator."""
    if asynchronous:
        raise UsageError("--secagg runs synchronous rounds only (--mode sync)")
    if getattr(args, "secagg_stage_timeout", 1.0) <= 0:
        raise UsageError("--secagg-stage-timeout must be > 0")
    spec = get_strategy(run.strategy)
    config = spec.make_config(dict(run.options))
    problem = secagg_problem(
        spec.server_cls(config, seed=run.seed), spec.client_cls(config), name=run.strategy
    )
    if problem is not None:
        raise UsageError(problem)


def server_run_spec(args: argparse.Namespace) -> RunSpec:
    """The run ``fedft serve``'s flags describe: strategy and options, model, seed, wrappers.

    Bad options fail here, before any state is opened or model loaded.
    """
    strategy = get_strategy(args.strategy)
    options = parse_overrides(strategy.config_cls, args.opt)
    resolve_strategy(args.strategy, options)  # a bad option is a usage error, said now
    privacy = dp_config_from_args(args)
    if privacy is not None:
        # A deployment's sample must be secret for amplification by sampling to hold.
        privacy = dataclasses.replace(privacy, sampling=SECRET)
    robust = robust_config_from_args(args)
    check_server_wrappers(
        dp=privacy is not None, robust=robust is not None, fedau=args.participation == "fedau"
    )
    return RunSpec(
        strategy=args.strategy,
        options=options,
        model=args.model,
        seed=args.seed,
        dp=privacy,
        robust=robust,
        participation=args.participation,
        secagg=secagg_settings_from_args(args) if hasattr(args, "secagg") else None,
    )


def export_global(setup: CoordinatorSetup, folder: Path) -> None:
    """Write the current global model into ``folder`` (PEFT adapters, or full weights)."""
    from fedft.core.serde import payload_from_bytes

    global_state = payload_from_bytes(setup.coordinator.global_payload())
    setup.runtime.load_global(global_state).save_model(folder)


def _fewest_clients(run: RunSpec) -> int:
    """The fewest devices online for a round to be worth opening under ``run``'s settings."""
    if run.secagg is None:
        return 1
    if run.dp is not None and run.dp.distributed:
        return max(2, run.dp.min_survivors)
    return 2
