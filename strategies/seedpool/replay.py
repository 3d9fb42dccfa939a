"""Seed-coefficient replay on the client: held versions, and moving the model between them.

Not to be confused with ``fedft.client.model_sync``, which downloads weights. A client keeps,
in its persisted local state, the coefficients of the versions the server may still send it a
delta from. The model itself is tagged with the coefficients it currently holds
(several virtual clients may share one model in simulation), and is moved to a new version by
replaying only the difference, one pass per block.

A *scaled* geometry (FedKSeed with weight decay) has one more row after the seeds: row K holds
``ln a_l``, block l's scale, and the block's weights are ``a_l * (w0 + sum_k C[k, l] z_k)``.
Scales compose by adding logs, so the row rides in deltas, held versions and checkpoints like
any coefficient; moving between versions rescales a block by ``exp(delta ln a)`` and replays
the seed rows times the target's ``a``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedft.core.payload import Payload, config_int
from fedft.core.rng import DEFAULT_CHUNK
from fedft.kernels.seed_ops import FlatParams, apply_seeds_
from fedft.strategies.seedpool.wire import decode_delta

_HELD = "v."


@dataclass(frozen=True)
class Geometry:
    """Everything two parties must agree on for coefficients to mean the same model."""

    seeds: tuple[int, ...]
    kind: str
    ends: tuple[int, ...]
    names: tuple[str, ...]
    # Non-empty when blocks are not contiguous in the stream (Ferret's module order): block l
    # is the union of spans[l]; ``ends`` then holds the blocks' cumulative sizes.
    spans: tuple[tuple[tuple[int, int], ...], ...] = ()
    # True when the matrix has a final row of log block scales (see the module docstring).
    scaled: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, blocks) of the coefficient matrix: one row per seed, plus the scale row."""
        return len(self.seeds) + int(self.scaled), len(self.ends)

    def block(self, index: int) -> tuple[int, int]:
        """Return block ``index`` as a ``[start, end)`` range of the parameter stream."""
        return (self.ends[index - 1] if index else 0), self.ends[index]

    def block_spans(self, index: int) -> tuple[tuple[int, int], ...]:
        """Return block ``index`` as the ``[start, end)`` spans of the stream it covers."""
        return self.spans[index] if self.spans else (self.block(index),)

    def all_spans(self) -> list[tuple[tuple[int, int], ...]]:
        """Every block's spans, in block order."""
        return [self.block_spans(i) for i in range(len(self.ends))]


# What each model currently holds, by model object: (geometry, coefficients).
_TAGS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[Geometry, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def held_coefficients(model: torch.nn.Module, geometry: Geometry) -> torch.Tensor:
    """Return the coefficients ``model`` holds now (zeros for an untouched pretrained model)."""
    tag = _TAGS.get(model)
    if tag is None:
        return torch.zeros(geometry.shape, dtype=torch.float64)
    if tag[0] != geometry:
        raise RuntimeError(
            "this model was tuned with another seed pool or parameter set; reload it"
        )
    return tag[1]


def set_held(model: torch.nn.Module, geometry: Geometry, coeffs: torch.Tensor) -> None:
    """Record that ``model`` now holds ``coeffs`` (after local steps changed it in place)."""
    _TAGS[model] = (geometry, coeffs.detach().to(torch.float64).clone())


def apply_coefficients_(
    params: FlatParams, geometry: Geometry, coeffs: torch.Tensor, *, scale: float = 1.0
) -> None:
    """Add ``scale * sum C[k, l] z_k|block_l`` to the parameters, seeds in ascending order.

    Only the seed rows are read: a scaled geometry's scale row is :func:`replay_`'s business.
    """
    seeds = len(geometry.seeds)
    for block in range(coeffs.shape[1]):
        column = coeffs[:seeds, block]
        used = column.nonzero().reshape(-1).tolist()
        if not used:
            continue
        for start, end in geometry.block_spans(block):
            apply_seeds_(
                params,
                [geometry.seeds[k] for k in used],
                [scale * float(column[k]) for k in used],
                geometry.kind,
                start=start,
                end=end,
            )


def scale_spans_(params: FlatParams, spans: Sequence[tuple[int, int]], factor: float) -> None:
    """Multiply the parameters in ``spans`` by ``factor``, each product rounded once to fp32."""
    exact = float(torch.tensor(factor, dtype=torch.float32)) == factor
    for start, end in spans:
        # fp32 * fp32 is correctly rounded, so an fp32 factor multiplies each parameter in
        # place in one go; any other factor goes through float64 a bounded window at a time.
        chunk = max(end - start, 1) if exact else DEFAULT_CHUNK
        for _, _, parts in params.windows(start, end, chunk=chunk):
            for _, view in parts:
                if exact:
                    view.mul_(factor)
                else:
                    view.copy_(view.double().mul_(factor))


def replay_(
    params: FlatParams, geometry: Geometry, delta: torch.Tensor, *, held: torch.Tensor
) -> None:
    """Move parameters that hold coefficients ``held`` to ``held + delta``.

    Unscaled: add the delta's seeds. Scaled: rescale each block by ``exp(delta ln a)``, then
    add ``a_target * delta`` (in the scaled frame the weights are ``a * (w0 + C z)``).
    """
    if not geometry.scaled:
        apply_coefficients_(params, geometry, delta)
        return
    row = len(geometry.seeds)
    for block in range(delta.shape[1]):
        step = float(delta[row, block])
        if step:
            scale_spans_(params, geometry.block_spans(block), math.exp(step))
    target_scale = torch.exp(held[row] + delta[row])
    apply_coefficients_(params, geometry, delta[:row] * target_scale)


def move_model(
    model: torch.nn.Module, params: FlatParams, geometry: Geometry, target: torch.Tensor
) -> None:
    """Bring ``model`` to the version with coefficients ``target`` by replaying the difference."""
    if tuple(target.shape) != geometry.shape:
        raise ValueError(f"coefficients of shape {tuple(target.shape)}, expected {geometry.shape}")
    current = held_coefficients(model, geometry)
    replay_(params, geometry, target - current, held=current)
    set_held(model, geometry, target)


def receive(task: Payload, local_state: Payload, geometry: Geometry) -> tuple[int, torch.Tensor]:
    """Rebuild the task's target coefficients from its delta and the version it is based on.

    Returns ``(target_version, coefficients)``; keeps only the base and target versions in
    ``local_state`` (the server can only send deltas from a version this client reported).
    Raises :class:`LookupError` when this client does not hold the base version any more.
    """
    base = config_int(task.config, "base")
    target = config_int(task.config, "target")
    held = _held(local_state)
    if base == 0:
        start = torch.zeros(geometry.shape, dtype=torch.float64)
    elif base in held:
        start = held[base]
    else:
        raise LookupError(f"the task builds on version {base}, which this client does not hold")
    rows, cols = geometry.shape
    coeffs = start + decode_delta(task, rows * cols).reshape(rows, cols)
    kept = {v: c for v, c in held.items() if v == base}
    kept[target] = coeffs
    for name in [n for n in local_state.tensors if n.startswith(_HELD)]:
        del local_state.tensors[name]
    local_state.tensors.update({f"{_HELD}{v}": c for v, c in kept.items()})
    return target, coeffs


def _held(local_state: Payload) -> dict[int, torch.Tensor]:
    return {
        int(name.removeprefix(_HELD)): t.to(torch.float64)
        for name, t in local_state.tensors.items()
        if name.startswith(_HELD)
    }


def geometry_of(
    seeds: Sequence[int],
    kind: str,
    params: FlatParams,
    ends: Sequence[int],
    spans: Sequence[Sequence[tuple[int, int]]] = (),
    *,
    scaled: bool = False,
) -> Geometry:
    """Bundle a pool, a perturbation kind and a blocked parameter set (see ``Geometry.spans``)."""
    return Geometry(
        tuple(seeds),
        kind,
        tuple(ends),
        params.layout.names,
        tuple(tuple(s) for s in spans),
        scaled,
    )
