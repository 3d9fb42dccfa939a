"""The server half inside its wrappers (DP and canaries, FedAU weights), as every host drives it.

The coordinator and the three simulation engines call :func:`wrap_server` (or
:func:`assemble_server`), so a wrapper added here (robust aggregation, participation weights)
runs in all of them; ``--secagg`` is checked here too. Nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedft.core.config import StrategyConfig
from fedft.core.errors import UsageError
from fedft.core.registry import StrategySpec
from fedft.core.strategy import ServerStrategy
from fedft.privacy.config import check_server_wrappers
from fedft.runtime.spec import RunSpec, resolve_strategy
from fedft.strategies.participation import FedAUServer, check_participation

if TYPE_CHECKING:
    from fedft.privacy.config import DPConfig
    from fedft.privacy.robust import RobustConfig
    from fedft.privacy.wrapper import DPServer


@dataclass
class ServerRuntime:
    """The server half a host drives, inside its wrappers, and handles on the wrappers."""

    strategy: StrategySpec
    config: StrategyConfig
    server_half: ServerStrategy[Any]
    dp: DPServer | None = None


def wrap_server(
    server_half: ServerStrategy[Any],
    *,
    seed: int,
    dp: DPConfig | None = None,
    robust: RobustConfig | None = None,
    name: str = "",
    participation: str = "none",
) -> tuple[ServerStrategy[Any], DPServer | None]:
    """Put a server half inside the wrappers the run asks for; the outermost one is driven.

    ``name`` is the registered strategy name, which a wrapper's refusal shows the user. DP and
    robust aggregation do not combine: DP already clips every update (hosts refuse both).
    ``participation="fedau"`` weights each update by its client's estimated 1/p (FedAU).
    """
    check_participation(participation)
    check_server_wrappers(
        dp=dp is not None, robust=robust is not None, fedau=participation == "fedau"
    )
    if participation == "fedau":
        return FedAUServer(server_half, seed=seed, name=name), None
    dp_server = None
    if robust is not None:
        from fedft.privacy.robust import RobustServer

        server_half = RobustServer(server_half, robust, seed=seed, name=name)
    if dp is not None:
        from fedft.privacy.wrapper import DPServer

        # Under DP the wrapper samples, clips, noises and writes the ledger entry of each round.
        dp_server = DPServer(server_half, dp, seed=seed, name=name)
        server_half = dp_server
    return server_half, dp_server


def assemble_server(spec: RunSpec) -> ServerRuntime:
    """Build the run's server half, wrapped as ``spec`` asks."""
    strategy, config = resolve_strategy(spec.strategy, spec.options)
    bare = strategy.server_cls(config, seed=spec.seed)
    if spec.secagg is not None:  # one line before any model loads, in every host
        from fedft.privacy.secagg.linear import secagg_problem

        problem = secagg_problem(bare, strategy.client_cls(config), name=strategy.name)
        if problem is not None:
            raise UsageError(problem)
    server_half, dp_server = wrap_server(
        bare,
        seed=spec.seed,
        dp=spec.dp,
        robust=spec.robust,
        name=strategy.name,
        participation=spec.participation,
    )
    return ServerRuntime(strategy, config, server_half, dp_server)
