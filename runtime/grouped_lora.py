"""Many clients' LoRA adapters in one forward pass: each row through its own client's adapter.

A packed batch holds several clients' rows, client by client. While :class:`GroupedLora` is
active, PEFT's own adapters are switched off and a forward hook on every LoRA layer adds, to each
client's rows, that client's ``B(A(x)) * scaling`` (PEFT's formula, without dropout). Clients
may differ in rank per module and in which layers carry adapters (heterogeneous layouts): a
layer a client has no adapter on leaves its rows as the base computes them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModuleAdapter:
    """One client's LoRA factors on one module: ``A`` (r x in), ``B`` (out x r), the scaling."""

    a: torch.Tensor
    b: torch.Tensor
    scaling: float


@dataclass(frozen=True)
class Segment:
    """Rows ``start:stop`` of the current batch belong to client number ``client``."""

    client: int
    start: int
    stop: int


def _delta(x: torch.Tensor, adapter: ModuleAdapter) -> torch.Tensor:
    """PEFT's LoRA term for ``x``: the input cast to the adapter's dtype, as PEFT casts it."""
    x = x.to(adapter.a.dtype)
    return F.linear(F.linear(x, adapter.a), adapter.b) * adapter.scaling


def _uniform(segments: Sequence[Segment], adapters: list[ModuleAdapter | None], rows: int) -> bool:
    """Whether one batched matmul serves every row of this module.

    That needs equal segments covering the whole batch, each client holding an adapter of the
    same shape here.
    """
    if not segments or segments[0].start != 0 or segments[-1].stop != rows:
        return False
    size = segments[0].stop - segments[0].start
    first = adapters[segments[0].client]
    if first is None:
        return False
    for prev, seg in itertools.pairwise(segments):
        if seg.start != prev.stop:
            return False
    for seg in segments:
        held = adapters[seg.client]
        if seg.stop - seg.start != size or held is None or held.a.shape != first.a.shape:
            return False
    return True


class GroupedLora:
    """While active, a PEFT model computes each client's rows with that client's adapter.

    ``clients[i]`` maps module paths (``model.get_submodule`` names of PEFT LoRA layers) to
    client ``i``'s factors there. :meth:`set_segments` says which rows of the next forward are
    whose; the factors are ordinary tensors, so gradients reach each client's own.
    """

    def __init__(self, model: torch.nn.Module, clients: Sequence[Mapping[str, ModuleAdapter]]):
        self.model = model
        self.clients = list(clients)
        paths = sorted({path for adapters in self.clients for path in adapters})
        self._by_module = {path: [c.get(path) for c in self.clients] for path in paths}
        self._segments: list[Segment] = []
        self._handles: list[Any] = []
        self._disabled: Any = None

    def set_segments(self, segments: Sequence[Segment]) -> None:
        """Say which client owns which rows of the batches that follow."""
        for seg in segments:
            if not 0 <= seg.client < len(self.clients) or seg.start >= seg.stop:
                raise ValueError(f"bad segment {seg}")
        self._segments = list(segments)

    def _hook(self, path: str) -> Any:
        adapters = self._by_module[path]

        def add_deltas(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            x = args[0]
            if x.dim() < 3:  # rows are examples: a flattened (tokens, features) input has none
                raise RuntimeError(f"{path}: grouped LoRA needs (batch, seq, features) inputs")
            rows = x.shape[0]
            segments = self._segments
            if _uniform(segments, adapters, rows):
                held = [h for h in (adapters[s.client] for s in segments) if h is not None]
                a = torch.stack([h.a for h in held])
                # The scaling goes into B (r columns) rather than onto the (rows x out) result.
                b = torch.stack([h.b * h.scaling for h in held])
                xs = x.to(a.dtype).reshape(len(held), -1, x.shape[-1])
                low = torch.bmm(xs, a.transpose(1, 2))
                if output.dtype == a.dtype:  # the add fused into the second GEMM
                    flat = output.reshape(len(held), -1, output.shape[-1])
                    return torch.baddbmm(flat, low, b.transpose(1, 2)).reshape(output.shape)
                delta = torch.bmm(low, b.transpose(1, 2)).reshape(output.shape)
                return output + delta.to(output.dtype)
            pieces: list[torch.Tensor] = []
            cursor = 0
            for seg in segments:
                adapter = adapters[seg.client]
                if adapter is None:
                    continue
                if seg.start > cursor:
                    pieces.append(output.new_zeros((seg.start - cursor, *output.shape[1:])))
                pieces.append(_delta(x[seg.start : seg.stop], adapter).to(output.dtype))
                cursor = seg.stop
            if not pieces:
                return output
            if cursor < rows:
                pieces.append(output.new_zeros((rows - cursor, *output.shape[1:])))
            return output + torch.cat(pieces)

        return add_deltas

    def __enter__(self) -> GroupedLora:
        disable = getattr(self.model, "disable_adapter", None)
        if disable is None:
            raise ValueError("grouped LoRA needs a PEFT model")
        self._disabled = disable()
        self._disabled.__enter__()
        for path in self._by_module:
            module = self.model.get_submodule(path)
            self._handles.append(module.register_forward_hook(self._hook(path)))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._disabled is not None:
            self._disabled.__exit__(kind, exc, tb)
            self._disabled = None
