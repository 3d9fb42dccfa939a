"""The flags that describe a run's mode and base model, and their rendering for every process.

``fedft serve`` takes the server-side ones (participation, sync or async mode), ``fedft
client`` the client-side ones (quantization, checkpointing, micro-batches, autocast), ``fedft
simulate`` both; the privacy flags live in :mod:`fedft.cli.privacy_flags`. The grpc simulation
engine starts real ``serve`` and ``client`` processes and renders a
:class:`~fedft.runtime.spec.RunSpec` back into flags with :func:`serve_flags` and
:func:`client_flags`, so a setting declared once reaches every engine (a round-trip test
parses the rendered flags back into the same spec).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fedft.core.async_options import (
    DEFAULT_BUFFER,
    DEFAULT_MAX_STALENESS,
    MODES,
    AsyncSettings,
    wrapper_refusal,
)
from fedft.core.errors import UsageError
from fedft.core.run_options import AUTOCAST_CHOICES, PARTICIPATION_CHOICES, QUANT_CHOICES

if TYPE_CHECKING:  # the privacy stack loads only when a flag asks for it
    from fedft.runtime.spec import RunSpec


def add_participation_flag(p: argparse.ArgumentParser) -> None:
    """Add --participation."""
    p.add_argument(
        "--participation",
        default="none",
        choices=PARTICIPATION_CHOICES,
        help="fedau: weight each update by its client's estimated participation interval "
        "(about 1/p, FedAU, Wang & Ji 2024), so rarely-present clients are not "
        "under-represented; the estimates live in the checkpoint (default: %(default)s)",
    )


def add_mode_flags(p: argparse.ArgumentParser) -> None:
    """Add --mode, --buffer and --max-staleness (``fedft serve``; simulate has its own table)."""
    p.add_argument(
        "--mode",
        choices=MODES,
        default="sync",
        help="sync: rounds, each waiting for its sampled clients; async: FedBuff, every client "
        "gets a task whenever it asks, built from the model as it is then, and every --buffer "
        "accepted updates make a new version (--rounds then counts versions; --round-timeout "
        "is how long a non-empty buffer waits) (default: %(default)s)",
    )
    p.add_argument(
        "--buffer",
        type=int,
        default=DEFAULT_BUFFER,
        metavar="K",
        help="--mode async: updates per new global version (default: %(default)s)",
    )
    p.add_argument(
        "--max-staleness",
        type=int,
        default=DEFAULT_MAX_STALENESS,
        metavar="S",
        help="--mode async: refuse an update trained from a model more than S versions old; a "
        "fresher one counts 1/sqrt(1 + staleness) of its weight (default: %(default)s)",
    )


def async_settings_from_args(args: argparse.Namespace) -> AsyncSettings | None:
    """The FedBuff settings ``--mode async`` asks for (None: sync), refusing what cannot mix."""
    settings = AsyncSettings(buffer=args.buffer, max_staleness=args.max_staleness)
    if args.mode != "async":
        return None
    problem = wrapper_refusal(
        dp=getattr(args, "dp_noise", None) is not None,
        robust=getattr(args, "robust", None) not in (None, "none"),
        participation=getattr(args, "participation", "none"),
    )
    if problem is not None:
        raise UsageError(problem)
    return settings


def add_quant_flag(p: argparse.ArgumentParser) -> None:
    """Add --quant."""
    p.add_argument(
        "--quant",
        choices=QUANT_CHOICES,
        default="none",
        help="quantize the frozen base model for LoRA strategies: nf4 (4-bit NormalFloat, "
        "QLoRA) or int8, block-wise with one fp32 scale per 64 weights (default: %(default)s)",
    )


def add_checkpointing_flag(p: argparse.ArgumentParser) -> None:
    """Add --gradient-checkpointing."""
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each decoder layer's activations in backward instead of keeping them: "
        "less training memory (docs/results.md, client memory), about one more forward pass of "
        "time; the same gradients",
    )


def add_autocast_flag(p: argparse.ArgumentParser) -> None:
    """Add --autocast."""
    p.add_argument(
        "--autocast",
        choices=AUTOCAST_CHOICES,
        default="none",
        help="bf16: run local training steps' forward under bf16 autocast (faster on GPUs "
        "with bf16 units; weights, gradients and optimizer state stay fp32; evaluation stays "
        "fp32) (default: %(default)s)",
    )


def add_micro_batch_flag(p: argparse.ArgumentParser) -> None:
    """Add --micro-batch."""
    p.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        metavar="M",
        help="train each step's batch M examples at a time, accumulating the gradient: the same "
        "step (to float rounding) in about M/batch of the activation memory (default: the "
        "whole batch at once)",
    )


def serve_flags(spec: RunSpec) -> list[str]:
    """The ``fedft serve`` flags that ask for ``spec``'s strategy, model, seed and wrappers."""
    from fedft.core.config import format_option  # loads torch: not at parser-building time

    args = [
        f"--strategy={spec.strategy}",
        *(f"--opt={k}={format_option(v)}" for k, v in spec.options.items()),
        f"--model={spec.model}",
        f"--seed={spec.seed}",
        f"--participation={spec.participation}",
    ]
    dp = spec.dp
    if dp is not None:
        args += [
            f"--dp-noise={dp.noise_multiplier!r}",
            f"--dp-clip={dp.clip!r}",
            f"--dp-sampling-rate={dp.sampling_rate!r}",
            f"--canaries={dp.canaries}",
        ]
        if dp.count_stddev is not None:
            args.append(f"--dp-count-stddev={dp.count_stddev!r}")
        if dp.min_survivors:
            args.append(f"--dp-min-survivors={dp.min_survivors}")
        switches = (
            ("--dp-adaptive", dp.adaptive),
            ("--canary-iterates", dp.all_iterates),
            ("--dp-distributed", dp.distributed),
        )
        args += [flag for flag, on in switches if on]
    robust = spec.robust
    if robust is not None:
        args += [f"--robust={robust.rule}", f"--robust-trim={robust.trim!r}"]
        if robust.bound is not None:
            args.append(f"--robust-bound={robust.bound!r}")
    secagg = spec.secagg
    if secagg is not None:
        args += [
            "--secagg",
            f"--secagg-neighbours={secagg.neighbours}",
            f"--secagg-threshold={secagg.threshold}",
        ]
        if secagg.clip is not None:
            args.append(f"--secagg-clip={secagg.clip!r}")
        if secagg.ring_bits is not None:
            args.append(f"--secagg-ring={secagg.ring_bits}")
    return args


def client_flags(spec: RunSpec) -> list[str]:
    """The ``fedft client`` flags asking for ``spec``'s model, quantization, device, local DP."""
    args = [
        f"--model={spec.model}",
        f"--quant={spec.quant}",
        f"--device={spec.device}",
        f"--max-length={spec.max_length}",
    ]
    if spec.gradient_checkpointing:
        args.append("--gradient-checkpointing")
    if spec.micro_batch is not None:
        args.append(f"--micro-batch={spec.micro_batch}")
    if spec.autocast != "none":
        args.append(f"--autocast={spec.autocast}")
    if spec.local_dp is not None:
        args += [
            f"--local-dp-clip={spec.local_dp.clip!r}",
            f"--local-dp-noise={spec.local_dp.noise_multiplier!r}",
        ]
    return args
