"""Secure aggregation of any ``LinearUpdates`` strategy: what devices send, what servers apply.

A device measures its update vector itself (``ClientStrategy.update_vector``), and sends it
only masked, encoded with the weight the server fixed before the round; in the clear go the
reply's bookkeeping metrics (:data:`PUBLIC_METRICS`) and whether it carried an update at all.
The server learns the sum of the survivors' weighted vectors and of their weights, and applies
their ratio as the round's mean through the strategy's ``apply_update``: no strategy-specific
code here or in any host. Hosts differ only in how the four stages travel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from fedft.core.layout import LORA_DEPTH, LORA_RANK
from fedft.core.payload import MetricValue, Payload
from fedft.core.strategy import ClientInfo, ClientStrategy, Failure, LinearUpdates, Result
from fedft.core.trainer import Trainer
from fedft.core.wrapper import LinearWrapper

from .encoding import Encoding
from .errors import EncodingOverflowError
from .noisy import NoisyEncoding
from .settings import SecAggSettings

if TYPE_CHECKING:
    from fedft.privacy.config import DPConfig
    from fedft.privacy.wrapper import DPServer

logger = logging.getLogger(__name__)

# What a reply shows the server in the clear: the weight it claims, the version it synced to
# (a seed strategy's delta bookkeeping) and its LoRA layout. Its loss and tensors stay on it.
PUBLIC_METRICS = ("num_examples", "version")
HAS_UPDATE = "secagg_update"  # 1 when the masked vector carries an update, 0 for none


def _is_layout(name: str) -> bool:
    """LoRA depth and ranks: the model's shape as configured, not a trace of local data."""
    return name == LORA_DEPTH or name.startswith(LORA_RANK)


def linear_of(server_half: Any) -> Any:
    """The ``LinearUpdates`` strategy of a server half, inside a wrapper (DP) if it has one."""
    return server_half.linear if isinstance(server_half, LinearWrapper) else server_half


def dp_of(server_half: Any) -> DPServer | None:
    """The DP wrapper of a server half, or None (central DP adds its noise to the sum)."""
    from fedft.privacy.wrapper import DPServer

    return server_half if isinstance(server_half, DPServer) else None


def secagg_problem(
    server_half: Any, client_half: ClientStrategy[Any] | None = None, *, name: str
) -> str | None:
    """Say in one line why strategy ``name`` cannot run under ``--secagg``, or None."""
    if not isinstance(linear_of(server_half), LinearUpdates):
        return (
            f"{name} cannot run under --secagg: its clients' updates have per-device shapes, "
            "and a secure sum needs one shared vector (fedavg_lora, fedkseed, fedkseed_pro and "
            "ferret can)"
        )
    if client_half is not None and not client_half.computes_vectors():
        return f"{name} cannot run under --secagg: its client half does not compute its vector"
    return None


def round_encoding(
    settings: SecAggSettings, strategy: LinearUpdates[Any], summands: int, *, l2_clip: float = 0.0
) -> Encoding:
    """The encoding of one round: the clip and ring asked for (or the strategy's), fitted to n.

    Weights are scaled into [0, 1] by the round's largest (:func:`task_weights`), so the
    fixed point spends no bits on them, and the mean (a ratio) is unchanged. Under DP every
    update is first clipped to L2 norm ``l2_clip``, which bounds each value too.
    """
    clip = encoding_clip(settings, strategy, l2_clip=l2_clip)
    ring = settings.ring_bits if settings.ring_bits is not None else strategy.secagg_ring_bits
    return Encoding.fit(summands, clip=clip, max_weight=1.0, ring_bits=ring)


def secure_encoding(settings: SecAggSettings, server_half: Any, participants: int) -> Encoding:
    """A round's encoding for ``participants``: plain, or with noise shares (distributed DP).

    Under central DP every device clips its update to the DP clip norm; under distributed DP
    each also adds its share of the noise (:class:`NoisyEncoding`), in the ring asked for, or
    the strategy's when it holds the noisy sum at full precision, else the 64-bit one. A round
    too small for ``--dp-min-survivors`` raises EncodingOverflowError: no round opens.
    """
    strategy = linear_of(server_half)
    dp = dp_of(server_half)
    l2_clip = dp.clipper.clip if dp is not None else 0.0
    if dp is None or not dp.dp.distributed:
        return round_encoding(settings, strategy, participants, l2_clip=l2_clip)
    return noisy_encoding(
        settings,
        dp.dp,
        participants,
        length=strategy.update_size(),
        strategy_ring=strategy.secagg_ring_bits,
    )


def noisy_encoding(
    settings: SecAggSettings, dp: DPConfig, participants: int, *, length: int, strategy_ring: int
) -> NoisyEncoding:
    """Distributed DP's encoding of a round: the noise shares fitted to the ring.

    The ring is the one asked for, or the strategy's when it holds the noisy sum at full
    precision (the Poisson sampler's limit, not the ring, usually fixes the scale), which
    halves a LoRA upload; else the 64-bit ring.
    """

    def fit(ring: int) -> NoisyEncoding:
        return NoisyEncoding.fit_noise(
            participants,
            clip=dp.clip,
            length=length,
            noise_multiplier=dp.noise_multiplier,
            survivors=min_survivors(dp.min_survivors, participants),
            ring_bits=ring,
        )

    if settings.ring_bits is not None:
        return fit(settings.ring_bits)
    wide = fit(64)
    if strategy_ring == 64:
        return wide
    try:
        narrow = fit(strategy_ring)
    except EncodingOverflowError:
        return wide
    return narrow if narrow.frac_bits == wide.frac_bits else wide


def min_survivors(asked: int, participants: int) -> int:
    """The fewest survivors a distributed-DP round's noise is calibrated for.

    As asked (``--dp-min-survivors``), else 70% of the round's participants rounded up, so
    that 30% may drop out after sharing keys and the round still releases its full noise.
    """
    if asked:
        return asked
    return max(2, math.ceil(0.7 * participants))


def encoding_clip(
    settings: SecAggSettings, strategy: LinearUpdates[Any], *, l2_clip: float = 0.0
) -> float:
    """The bound every coordinate is clipped to: asked for, the strategy's, or the DP clip."""
    clip = settings.clip if settings.clip is not None else strategy.secagg_clip
    if l2_clip > 0:
        clip = min(clip, l2_clip) if settings.clip is not None else l2_clip
    return clip


def task_weights(
    strategy: LinearUpdates[Any], clients: Sequence[ClientInfo], *, equal: bool = False
) -> dict[str, float]:
    """Each participant's weight, fixed before it trains, scaled so the largest is 1.

    It is the strategy's weight of a reply claiming the example count the client's device
    reported, so a device cannot give itself more weight inside the masked sum than the
    server granted (the encoding refuses a weight above 1). ``equal`` (DP: each clipped
    update counts once) gives everyone 1.
    """
    if equal:
        return {c.client_id: 1.0 for c in clients}
    raw = {
        c.client_id: strategy.update_weight(
            Result(c.client_id, Payload(metrics={"num_examples": c.num_examples}))
        )
        for c in clients
    }
    top = max(raw.values(), default=0.0)
    return {cid: (w / top if top > 0 else 0.0) for cid, w in raw.items()}


@dataclass(frozen=True)
class DeviceInput:
    """What one device puts into the secure sum, and what it shows in the clear."""

    vector: NDArray[np.float64] | None  # None: the reply carried no update (weight 0)
    public: Payload
    clipped: int = 0  # coordinates beyond the clip: the device warns, the server never knows


def device_input(
    client_half: ClientStrategy[Any],
    task: Payload,
    reply: Payload,
    trainer: Trainer,
    clip: float,
    *,
    l2_clip: float = 0.0,
) -> DeviceInput:
    """Split a device's reply into its secret vector and its public metrics.

    ``l2_clip`` > 0 (central DP under SecAgg): the device clips its vector to that L2 norm,
    the clipping the DP wrapper does to each update in the clear.
    """
    vector = client_half.update_vector(task, reply, trainer)
    metrics: dict[str, MetricValue] = {
        k: v for k, v in reply.metrics.items() if k in PUBLIC_METRICS or _is_layout(k)
    }
    x = None if vector is None else vector.detach().to(torch.float64).numpy().reshape(-1)
    if x is not None and not np.all(np.isfinite(x)):
        logger.warning("the local update has NaN or Inf values: it goes into the sum as none")
        x = None
    if x is not None and l2_clip > 0:
        norm = float(np.linalg.norm(x))
        if norm > l2_clip:
            x = x * (l2_clip / norm)
    metrics[HAS_UPDATE] = int(x is not None)
    clipped = 0 if x is None else int(np.count_nonzero(np.abs(x) > clip))
    if clipped:
        logger.warning(
            "%d of %d update values exceed the secure aggregation clip %g and were clipped "
            "(raise --secagg-clip)",
            clipped,
            x.size if x is not None else 0,
            clip,
        )
    return DeviceInput(x, Payload(metrics=metrics), clipped)


def public_problem(result: Result) -> str | None:
    """Say why a public part is malformed (it is all a server can check), or None."""
    metrics = result.payload.metrics
    weight = metrics.get("num_examples", 0)
    if not (isinstance(weight, int) and weight > 0):
        return f"num_examples must be a positive int, got {weight!r}"
    if metrics.get(HAS_UPDATE) not in (0, 1):
        return f"{HAS_UPDATE} must be 0 or 1"
    if result.payload.tensors:
        return "under secure aggregation no tensor travels in the clear"
    return None


def apply_sum(
    server_half: Any,
    server_round: int,
    publics: Sequence[Result],
    total: NDArray[np.float64],
    weight: float,
    *,
    failures: Sequence[Failure],
    encoding: Encoding,
    extra: Mapping[str, MetricValue] | None = None,
) -> dict[str, MetricValue]:
    """Apply a decoded secure sum as the round's mean; return the round metrics.

    ``publics`` are the survivors' public parts, ``total`` and ``weight`` the decoded sums of
    weighted vectors and of weights. The strategy keeps its bookkeeping (``note_public``) but
    never sees one client's vector, so, as under DP, its ``observe`` is not called. Under
    central DP (``server_half`` a DP wrapper) the sum of clipped updates gets the wrapper's
    noise and denominator, and its ledger entry says ``secagg`` with the realised survivors.
    Under distributed DP (a :class:`NoisyEncoding`) the sum already carries the survivors'
    noise: the wrapper adds none and records the Skellam mechanism they realised.
    """
    strategy = linear_of(server_half)
    for result in publics:
        strategy.note_public(server_round, result)
    contributed = sum(1 for r in publics if r.payload.metrics.get(HAS_UPDATE) == 1)
    dp = dp_of(server_half)
    if dp is not None:
        summed = torch.from_numpy(np.asarray(total, dtype=np.float64))
        if isinstance(encoding, NoisyEncoding):
            released = dp.release_noised_sum(
                server_round,
                summed,
                contributed,
                failures,
                encoding=encoding,
                survivors=len(publics),
            )
        else:
            released = dp.release_sum(server_round, summed, contributed, failures)
        return {**released, "secagg_survivors": len(publics), **(extra or {})}
    metrics: dict[str, MetricValue] = {
        "accepted": contributed,
        "rejected": 0,
        "failures": len(failures),
        "secagg_survivors": len(publics),
        **(extra or {}),
    }
    if contributed and weight > 0:
        mean = torch.from_numpy(np.asarray(total, dtype=np.float64) / weight)
        metrics.update(strategy.apply_update(server_round, mean))
    return metrics
