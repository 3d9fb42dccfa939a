"""Fit a client to a memory budget: pick quantization, checkpointing and micro-batch (FedPipe-like).

``fedft client --memory-budget 1.5GiB`` asks for the plan that changes training least and
whose estimated peak fits: full precision before a quantized base (quantization changes the
numbers), then no checkpointing before checkpointing (it costs time), then larger micro-batches
before smaller ones (the step is the same, only slower). The estimate is a model of the peak
resident memory of one LoRA client, calibrated on SmolLM2-135M (docs/results.md, "Client
memory"):

    peak = 1.15 * (runtime + base weights + activations + loss chunk)

- runtime: the interpreter, torch, transformers and the tokenizer (465 MiB measured);
- base weights: 4 bytes a parameter, or for nf4 0.5625 bytes a decoder linear weight (4 bits
  and one fp32 scale per 64) with the embeddings and norms in fp32;
- activations, per example of ``max_length`` tokens in a micro-batch: every decoder layer keeps
  about ``10 * hidden + 4 * intermediate`` fp32 values a token; with gradient checkpointing,
  2 * hidden a layer plus one full layer;
- the chunked LM-head loss: at most 32 MiB;
- a 15% margin. On SmolLM2 the estimate lies between 1% below and 19% above the measured
  peaks (closest with gradient checkpointing, the plans a tight budget gets).

int8 is not planned: its measured peaks sit above nf4's (docs/results.md) by more than this
model explains. The estimate assumes small malloc blocks return to the system (the daemon sets
``M_MMAP_THRESHOLD`` to 128 KiB when a budget is given; glibc's default keeps ~1.4x more).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from fedft.core.errors import UsageError

MIB = 1 << 20
RUNTIME_BYTES = 465 * MIB
LOSS_CHUNK_BYTES = 32 * MIB
MARGIN = 1.15
MICRO_BATCHES = (8, 4, 2, 1)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": MIB, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only transformer's config."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def linear_params(self) -> int:
        """Weights of the decoder layers' linear projections (what nf4 quantizes)."""
        # Attention q, k, v, o (k/v may be narrower with GQA: counted full, a safe side) and the
        # gated MLP's three projections.
        per_layer = 4 * self.hidden * self.hidden + 3 * self.hidden * self.intermediate
        return self.layers * per_layer

    @property
    def other_params(self) -> int:
        """Embeddings, LM head (unless tied) and norms: kept in fp32 under every scheme."""
        heads = 1 if self.tied else 2
        return heads * self.vocab * self.hidden + (2 * self.layers + 1) * self.hidden


@dataclass(frozen=True)
class MemoryPlan:
    """The chosen training configuration and its estimated peak."""

    quant: str
    gradient_checkpointing: bool
    micro_batch: int
    estimate_bytes: int

    def describe(self) -> str:
        """One line for the daemon's log."""
        return (
            f"--quant {self.quant}, gradient checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}, micro-batch {self.micro_batch}: "
            f"about {self.estimate_bytes / MIB:,.0f} MiB at peak"
        )


def parse_budget(text: str) -> int:
    """``1.5GiB``, ``800MiB``, ``2G`` or a byte count -> bytes; a UsageError otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(f"--memory-budget {text!r}: give a size such as 1.5GiB or 800MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def model_shape(folder: Path) -> ModelShape:
    """Read the shape from a checkpoint folder's ``config.json``."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    try:
        hidden = int(config.get("hidden_size") or config["n_embd"])
        return ModelShape(
            layers=int(config.get("num_hidden_layers") or config["n_layer"]),
            hidden=hidden,
            intermediate=int(config.get("intermediate_size") or 4 * hidden),
            vocab=int(config["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{folder}: cannot read the model's shape for --memory-budget ({exc})"
        ) from None


def estimate_bytes(
    shape: ModelShape, *, quant: str, checkpointing: bool, micro_batch: int, max_length: int
) -> int:
    """Estimated peak resident bytes of a LoRA client (see the module docstring)."""
    linear_bytes = 0.5625 if quant == "nf4" else 4.0
    weights = shape.linear_params * linear_bytes + shape.other_params * 4
    full_layer = 4 * (10 * shape.hidden + 4 * shape.intermediate)
    per_token = (
        shape.layers * 4 * 2 * shape.hidden + full_layer
        if checkpointing
        else shape.layers * full_layer
    )
    activations = micro_batch * max_length * per_token
    return int(MARGIN * (RUNTIME_BYTES + weights + activations + LOSS_CHUNK_BYTES))


def candidates(shape: ModelShape, max_length: int) -> list[MemoryPlan]:
    """Every plan in order of preference, with its estimate."""
    return [
        MemoryPlan(
            quant,
            checkpointing,
            micro,
            estimate_bytes(
                shape,
                quant=quant,
                checkpointing=checkpointing,
                micro_batch=micro,
                max_length=max_length,
            ),
        )
        for quant in ("none", "nf4")
        for checkpointing in (False, True)
        for micro in MICRO_BATCHES
    ]


def plan_for_budget(budget: int, shape: ModelShape, *, max_length: int) -> MemoryPlan:
    """The first plan (in preference order) that fits; a UsageError naming the least that does."""
    plans = candidates(shape, max_length)
    for plan in plans:
        if plan.estimate_bytes <= budget:
            return plan
    least = min(p.estimate_bytes for p in plans)
    raise UsageError(
        f"--memory-budget {budget / MIB:,.0f} MiB is too small for this model at "
        f"--max-length {max_length}: the smallest plan needs about "
        f"{-(-least // MIB):,} MiB (nf4, gradient checkpointing, micro-batch 1)"
    )


def return_freed_memory() -> bool:
    """Ask glibc to hand freed blocks over 128 KiB straight back to the system.

    ``mallopt(M_MMAP_THRESHOLD, 128 KiB)``, as ``MALLOC_MMAP_THRESHOLD_=131072`` does at start:
    glibc's dynamic threshold otherwise grows to 32 MiB and keeps the freed activations in a
    fragmented heap (docs/results.md measures ~1.4x higher peaks). False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    m_mmap_threshold = -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 128 * 1024))
