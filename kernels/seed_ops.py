"""Seed-addressed vector ops on a model's parameters: perturb, replay many seeds, project.

A :class:`FlatParams` lays the selected parameters out in the RNG contract's global order
(sorted by name, see :mod:`fedft.core.rng`). Each op dispatches like every kernel op
(``FEDFT_KERNELS``, :mod:`fedft.kernels.dispatch`): the Triton kernels of
:mod:`fedft.kernels.seeded` and :mod:`fedft.kernels.projection` when they run, else a torch loop
over the stream in bounded pieces, with z from :func:`fedft.kernels.rng_cpu.fill_perturbation`
(compiled C++ or the torch reference); no full-size perturbation is ever materialized.

Arithmetic follows the contract: each scaled perturbation is rounded (``z * c``) before it is
added, seeds are summed in the order given, and a piece of the parameters is written once per
replay, however many seeds it carries.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from typing import BinaryIO

import torch

from fedft.core.rng import DEFAULT_CHUNK, ParameterLayout
from fedft.kernels import projection, seeded
from fedft.kernels.dispatch import use_triton
from fedft.kernels.rng_cpu import fill_perturbation


class FlatParams:
    """Named fp32 tensors seen as one vector, in the RNG contract's parameter order."""

    def __init__(self, named: Mapping[str, torch.Tensor]):
        for name, tensor in named.items():
            if tensor.dtype != torch.float32:
                raise ValueError(f"{name} is {tensor.dtype}; seed replays need fp32 master weights")
            if not tensor.is_contiguous():
                raise ValueError(f"{name} is not contiguous")
        self.layout = ParameterLayout.from_named(named)
        # Detached views share storage, so in-place ops on them change the parameters.
        self.flat = [named[entry.name].detach().view(-1) for entry in self.layout]
        self.total = self.layout.total
        self._starts = [entry.offset for entry in self.layout]

    def windows(
        self, start: int = 0, end: int | None = None, chunk: int = DEFAULT_CHUNK
    ) -> Iterator[tuple[int, int, list[tuple[int, torch.Tensor]]]]:
        """Yield ``(offset, n, parts)`` windows of <= ``chunk`` elements covering ``[start, end)``.

        ``parts`` lists ``(position in the window, parameter view)``; consecutive parameters are
        adjacent in the stream, so one window's perturbation serves many small parameters.
        """
        end = self.total if end is None else end
        if not 0 <= start <= end <= self.total:
            raise ValueError(f"range [{start}, {end}) is outside [0, {self.total})")
        entry_index = bisect.bisect_right(self._starts, start) - 1
        for offset in range(start, end, chunk):
            n = min(chunk, end - offset)
            parts: list[tuple[int, torch.Tensor]] = []
            while entry_index < len(self.flat):
                base = self._starts[entry_index]
                lo = max(offset, base)
                hi = min(offset + n, base + self.flat[entry_index].numel())
                if lo < hi:
                    parts.append((lo - offset, self.flat[entry_index][lo - base : hi - base]))
                if base + self.flat[entry_index].numel() > offset + n:
                    break  # this parameter continues in the next window
                entry_index += 1
            yield offset, n, parts

    def snapshot(self) -> torch.Tensor:
        """Return a flat fp32 copy of the parameters, in layout order, on the CPU.

        Filled in place: copying each parameter and concatenating held two copies at once
        (1 GiB on SmolLM2 where one is 513 MiB).
        """
        out = torch.empty(self.total, dtype=torch.float32)
        for entry, flat in zip(self.layout, self.flat, strict=True):
            out[entry.offset : entry.offset + entry.numel].copy_(flat.detach())
        return out

    def write_to(self, file: BinaryIO) -> None:
        """Write the parameters to ``file`` (raw fp32, layout order): a snapshot held on disk."""
        file.seek(0)
        for flat in self.flat:
            host = flat.detach().cpu()  # no copy for a CPU parameter
            file.write(host.numpy().data.cast("B"))
        file.flush()

    def read_from(self, file: BinaryIO) -> None:
        """Overwrite the parameters with what :meth:`write_to` wrote, bit for bit."""
        file.seek(0)
        for flat in self.flat:
            on_cpu = flat.device.type == "cpu"
            target = flat.detach() if on_cpu else torch.empty(flat.numel(), dtype=flat.dtype)
            view = target.numpy().data.cast("B")
            done = 0
            while done < len(view):
                got = file.readinto(view[done:])  # type: ignore[attr-defined]
                if not got:
                    raise ValueError("the snapshot file ended early")
                done += got
            if not on_cpu:
                flat.copy_(target)

    def restore(self, snapshot: torch.Tensor) -> None:
        """Copy a :meth:`snapshot` back into the parameters."""
        if snapshot.numel() != self.total:
            raise ValueError(f"snapshot has {snapshot.numel()} values, expected {self.total}")
        for entry, flat in zip(self.layout, self.flat, strict=True):
            flat.copy_(snapshot[entry.offset : entry.offset + entry.numel])


def _fp32(value: float) -> float:
    """Round a Python float to the nearest fp32, the precision every backend multiplies in."""
    return float(torch.tensor(value, dtype=torch.float32))


def perturb_(
    params: FlatParams,
    seed: int,
    alpha: float,
    kind: str,
    *,
    cached: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> None:
    """Add ``alpha * z(seed)`` to every parameter, in place.

    ``cached`` is z(seed) over the whole stream (from :func:`direction`): callers that apply the
    same seed several times trade its memory for not regenerating it.
    """
    if cached is None and params.flat and use_triton("seeded.perturb", params.flat[0]):
        # z is generated in the kernel, one launch per parameter, bit-identical to the loop below.
        for entry, flat in zip(params.layout, params.flat, strict=True):
            seeded.perturb_(flat, seed, entry.offset, alpha, kind)
        return
    buffer = torch.empty(min(chunk, max(params.total, 1)), dtype=torch.float32)
    scale = _fp32(alpha)
    for offset, n, parts in params.windows(chunk=chunk):
        if cached is None:
            z = fill_perturbation(seed, offset, buffer[:n], kind)
        else:
            z = torch.mul(cached[offset : offset + n], 1.0, out=buffer[:n])
        _add_into(parts, z.mul_(scale))


def direction(params: FlatParams, seed: int, kind: str) -> torch.Tensor:
    """Return z(seed) over the whole parameter stream (memory: one fp32 copy of the params)."""
    out = torch.empty(params.total, dtype=torch.float32)
    return fill_perturbation(seed, 0, out, kind)


def _add_into(parts: list[tuple[int, torch.Tensor]], values: torch.Tensor) -> None:
    """Add a window's values to the parameter views it covers."""
    for pos, view in parts:
        view.add_(values[pos : pos + view.numel()].to(view.device))


def apply_seeds_(
    params: FlatParams,
    seeds: Sequence[int],
    coeffs: Sequence[float],
    kind: str,
    *,
    start: int = 0,
    end: int | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> None:
    """Add ``sum_k coeffs[k] * z(seeds[k])`` over ``[start, end)``, one write per piece."""
    if len(seeds) != len(coeffs):
        raise ValueError(f"{len(seeds)} seeds but {len(coeffs)} coefficients")
    if not seeds:
        return
    if params.flat and use_triton("seeded.replay", params.flat[0]):
        # One fused launch per parameter piece: all seeds accumulate in registers, one write.
        end = params.total if end is None else end
        for offset, _, parts in params.windows(start, end, chunk=max(end - start, 1)):
            for pos, view in parts:
                seeded.replay_(view, offset + pos, seeds, coeffs, kind)
        return
    scales = [_fp32(c) for c in coeffs]
    size = min(chunk, max(params.total, 1))
    buffer = torch.empty(size, dtype=torch.float32)
    total = torch.empty(size, dtype=torch.float32)
    for offset, n, parts in params.windows(start, end, chunk):
        acc = total[:n].zero_()
        for seed, scale in zip(seeds, scales, strict=True):
            acc.add_(fill_perturbation(seed, offset, buffer[:n], kind).mul_(scale))
        _add_into(parts, acc)


def project(
    vector: torch.Tensor,
    base_offset: int,
    seeds: Sequence[int],
    kind: str,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Return ``[<vector, z(seed_k)[base_offset:...]> for k]`` in float64.

    ``vector`` is a flat slice of the global stream starting at ``base_offset``; see
    :func:`fedft.kernels.projection.project` (torch or Triton, fp64 exact products).
    """
    return projection.project(vector, base_offset, seeds, kind, chunk=chunk)
