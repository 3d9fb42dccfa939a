"""The DP flags of ``fedft serve`` (``fedft simulate`` declares the same ones in its table)."""

from __future__ import annotations

import argparse

from fedft.privacy.config import DPConfig, dp_config_from_flags


def add_dp_flags(p: argparse.ArgumentParser) -> None:
    """Add --dp-noise, --dp-clip, --dp-adaptive, --dp-sampling-rate and --canaries."""
    group = p.add_argument_group(
        "client-level differential privacy",
        "a server-side wrapper clips every client's update, adds Gaussian noise to the sum and "
        "records each round in the privacy ledger (see `fedft audit`)",
    )
    group.add_argument(
        "--dp-noise",
        type=float,
        default=None,
        metavar="Z",
        help="noise multiplier z: noise std on the clipped sum is z * clip (enables DP)",
    )
    group.add_argument(
        "--dp-clip", type=float, default=None, metavar="C", help="L2 clip norm of each update"
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
        help="each client joins a round independently with probability Q (default: %(default)s)",
    )
    group.add_argument(
        "--dp-count-stddev",
        type=float,
        default=None,
        metavar="S",
        help="adaptive clipping: noise std on the unclipped count (default: expected / 20)",
    )
    group.add_argument(
        "--canaries",
        type=int,
        default=0,
        metavar="N",
        help="insert N canary clients (and keep N unseen) for the empirical audit",
    )
    group.add_argument(
        "--canary-iterates",
        action="store_true",
        help="also score canaries against every round's update (all-iterates threat model)",
    )


def dp_config_from_args(args: argparse.Namespace) -> DPConfig | None:
    """Return the DP settings the flags ask for, or None without --dp-noise."""
    return dp_config_from_flags(
        noise=args.dp_noise,
        clip=args.dp_clip,
        adaptive=args.dp_adaptive,
        sampling_rate=args.dp_sampling_rate,
        count_stddev=args.dp_count_stddev,
        canaries=args.canaries,
        all_iterates=args.canary_iterates,
    )
