"""The privacy flags of a run, declared once for every command: DP, robust and secure sums.

``fedft serve`` and ``fedft simulate`` take the server-side ones (``--dp-*``, ``--robust*``,
``--secagg*``), ``fedft client`` and ``fedft simulate`` the device-side ``--local-dp-*``.
Each ``add_*`` declares a group, each ``*_from_args`` builds its validated settings;
``fedft.cli.run_flags`` renders them back for the grpc engine's processes.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fedft.core.errors import UsageError

if TYPE_CHECKING:  # the privacy stack loads only when a flag asks for it
    from fedft.privacy.config import DPConfig, LocalDPConfig
    from fedft.privacy.robust import RobustConfig
    from fedft.privacy.secagg.settings import SecAggSettings

ROBUST_RULES = ("norm", "trimmed", "median")


def add_dp_flags(p: argparse.ArgumentParser, *, note: str = "") -> None:
    """Add --dp-noise, --dp-clip, --dp-adaptive, --dp-sampling-rate and --canaries."""
    group = p.add_argument_group(
        "client-level differential privacy",
        "a server-side wrapper clips every client's update, adds Gaussian noise to the sum and "
        "records each round in the privacy ledger (see `fedft audit`)" + note,
    )
    group.add_argument(
        "--dp-noise",
        type=float,
        default=None,
        metavar="Z",
        help="noise multiplier z: noise std on the clipped sum is z * clip (enables DP)",
    )
    group.add_argument(
        "--dp-clip",
        type=float,
        default=None,
        metavar="C",
        help="L2 clip norm of each update (the initial one with --dp-adaptive)",
    )
    group.add_argument(
        "--dp-adaptive",
        action="store_true",
        help="adapt the clip norm to the median update norm (Andrew et al. 2021)",
    )
    group.add_argument(
        "--dp-sampling-rate",
        type=float,
        default=1.0,
        metavar="Q",
        help="each client (and canary) joins a round independently with probability Q "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--dp-count-stddev",
        type=float,
        default=None,
        metavar="S",
        help="adaptive clipping: noise std on the count of unclipped clients (default: expected "
        "participants / 20); the noise multiplier must stay below 2 S",
    )
    group.add_argument(
        "--dp-distributed",
        action="store_true",
        help="with --secagg: every device adds its share of (Skellam) noise before masking, so "
        "the coordinator never sees a sum without noise (distributed DP; the ledger says "
        "skellam, `fedft audit` accounts it in RDP)",
    )
    group.add_argument(
        "--dp-min-survivors",
        type=int,
        default=0,
        metavar="N",
        help="--dp-distributed: each device adds 1/N of the noise variance, and a round with "
        "fewer than N devices left at the unmask stage is not released (default: 70%% of "
        "each round's participants)",
    )
    group.add_argument(
        "--canaries",
        type=int,
        default=0,
        metavar="N",
        help="insert N canary clients (random unit updates) and keep N unseen, for the "
        "empirical audit (default: %(default)s)",
    )
    group.add_argument(
        "--canary-iterates",
        action="store_true",
        help="also score canaries against every round's update (all-iterates threat model), "
        "not only the final model",
    )


def dp_config_from_args(args: argparse.Namespace) -> DPConfig | None:
    """Return the DP settings the flags ask for, or None without --dp-noise."""
    from fedft.privacy.config import dp_config_from_flags

    return dp_config_from_flags(
        noise=args.dp_noise,
        clip=args.dp_clip,
        adaptive=args.dp_adaptive,
        sampling_rate=args.dp_sampling_rate,
        count_stddev=args.dp_count_stddev,
        canaries=args.canaries,
        all_iterates=args.canary_iterates,
        distributed=args.dp_distributed,
        min_survivors=args.dp_min_survivors,
    )


def add_robust_flags(p: argparse.ArgumentParser) -> None:
    """Add --robust, --robust-bound and --robust-trim."""
    group = p.add_argument_group(
        "robust aggregation",
        "replace the strategy's weighted mean by a rule one malicious client cannot steer far "
        "(strategies that expose update vectors; not together with --dp-noise)",
    )
    group.add_argument(
        "--robust",
        choices=ROBUST_RULES,
        default=None,
        help="norm: clip each update to --robust-bound and average; trimmed: coordinate-wise "
        "trimmed mean; median: coordinate-wise median",
    )
    group.add_argument(
        "--robust-bound",
        type=float,
        default=None,
        metavar="B",
        help="L2 bound every update is clipped to first (required by norm)",
    )
    group.add_argument(
        "--robust-trim",
        type=float,
        default=0.1,
        metavar="F",
        help="trimmed: share of values dropped at each end per coordinate (default: %(default)s)",
    )


def robust_config_from_args(args: argparse.Namespace) -> RobustConfig | None:
    """The robust aggregation the --robust flags ask for, or None."""
    if args.robust is None:
        return None
    from fedft.privacy.robust import RobustConfig

    return RobustConfig(args.robust, bound=args.robust_bound, trim=args.robust_trim)


def add_secagg_flags(p: argparse.ArgumentParser, *, stage_timeout: bool = False) -> None:
    """Add --secagg and its settings (``stage_timeout``: also --secagg-stage-timeout, serve)."""
    group = p.add_argument_group(
        "secure aggregation",
        "SecAgg+ (Bell et al. 2020): each device masks its update so that the server learns "
        "only the round's sum, even when some devices drop out (strategies with update "
        "vectors: fedavg_lora, fedkseed, fedkseed_pro, ferret)",
    )
    group.add_argument("--secagg", action="store_true", help="aggregate every round with SecAgg+")
    group.add_argument(
        "--secagg-neighbours",
        type=int,
        default=0,
        metavar="K",
        help="devices each one shares its secrets with, even (default: 2 log2 n for n)",
    )
    group.add_argument(
        "--secagg-threshold",
        type=int,
        default=0,
        metavar="T",
        help="shares that rebuild a dropped device's secret, in (K/2, K] (default: K/2 + 1)",
    )
    group.add_argument(
        "--secagg-clip",
        type=float,
        default=None,
        metavar="C",
        help="clip every update value to [-C, C] before the fixed-point encoding (default: "
        "the strategy's: 1 for LoRA deltas, 1e4 for seed coefficients)",
    )
    group.add_argument(
        "--secagg-ring",
        type=int,
        choices=(32, 64),
        default=None,
        help="bits of the ring the encoded values live in: 32 costs what float32 does, 64 "
        "keeps more precision (default: the strategy's: 32 for LoRA, 64 for seed strategies)",
    )
    if stage_timeout:
        group.add_argument(
            "--secagg-stage-timeout",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds the key, share and unmask stages of a round wait for devices; the "
            "masked updates have the round's --round-timeout (default: %(default)s)",
        )


def secagg_settings_from_args(args: argparse.Namespace) -> SecAggSettings | None:
    """The secure aggregation the --secagg flags ask for, or None."""
    from fedft.privacy.secagg.settings import SecAggSettings

    settings = SecAggSettings(
        neighbours=args.secagg_neighbours,
        threshold=args.secagg_threshold,
        clip=args.secagg_clip,
        ring_bits=args.secagg_ring,
    )
    if not args.secagg:
        if settings != SecAggSettings():
            raise UsageError("--secagg-neighbours, -threshold, -clip and -ring need --secagg")
        return None
    return settings


def add_local_dp_flags(p: argparse.ArgumentParser) -> None:
    """Add --local-dp-clip and --local-dp-noise."""
    group = p.add_argument_group(
        "local differential privacy",
        "every update is clipped and noised on the device, before it leaves it",
    )
    group.add_argument(
        "--local-dp-clip",
        type=float,
        default=None,
        metavar="C",
        help="clip every update sent to L2 norm C (enables local DP)",
    )
    group.add_argument(
        "--local-dp-noise",
        type=float,
        default=0.0,
        metavar="Z",
        help="Gaussian noise of std Z * C on every update sent (default: %(default)s)",
    )


def local_dp_config_from_args(args: argparse.Namespace) -> LocalDPConfig | None:
    """The client-side DP the flags ask for, or None."""
    from fedft.privacy.config import local_dp_config_from_flags

    return local_dp_config_from_flags(clip=args.local_dp_clip, noise=args.local_dp_noise)
