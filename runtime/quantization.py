"""Quantize a loaded model's frozen linear layers (NF4/int8) for LoRA training on top."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fedft.core.errors import UsageError
from fedft.core.run_options import QUANT_CHOICES
from fedft.runtime.models import ModelBundle

# The output head stays in full precision, as in QLoRA: it is small next to the stack and its
# rounding hurts the loss most.
DEFAULT_SKIP = ("lm_head",)


@dataclass(frozen=True)
class QuantSummary:
    """What quantization did to the model's memory: weight bytes before and after."""

    scheme: str
    layers: int
    bytes_before: int
    bytes_after: int

    @property
    def saved_fraction(self) -> float:
        """Fraction of the model's weight bytes saved."""
        return 1.0 - self.bytes_after / self.bytes_before if self.bytes_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as plain JSON data."""
        return {**asdict(self), "saved_fraction": round(self.saved_fraction, 4)}


def model_bytes(model: torch.nn.Module) -> int:
    """Return the bytes held by a model's parameters and buffers (shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += tensor.untyped_storage().nbytes()
    return total


def check_quant(scheme: str) -> str:
    """Validate a ``--quant`` value."""
    if scheme not in QUANT_CHOICES:
        raise UsageError(f"--quant must be one of {', '.join(QUANT_CHOICES)}, got {scheme!r}")
    return scheme


def quantize_model(
    model: torch.nn.Module, scheme: str, *, skip: tuple[str, ...] = DEFAULT_SKIP
) -> QuantSummary:
    """Replace every ``nn.Linear`` (except names in ``skip``) by a frozen ``QuantLinear``."""
    from fedft.kernels.quant_linear import QuantLinear

    check_quant(scheme)
    before = model_bytes(model)
    if scheme == "none":
        return QuantSummary(scheme, 0, before, before)
    # Names only: holding the modules would keep every full-precision weight alive until the end.
    targets = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in skip
    ]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantLinear.from_linear(getattr(parent, child), scheme))
    return QuantSummary(scheme, len(targets), before, model_bytes(model))


def load_quantized_model(
    path: Path, scheme: str, *, dtype: torch.dtype, skip: tuple[str, ...] = DEFAULT_SKIP
) -> tuple[torch.nn.Module, QuantSummary] | None:
    """Build the model at ``path`` quantized while it streams in (the fp32 model never exists).

    None when the checkpoint cannot be streamed; the caller loads it whole and quantizes after.
    """
    from fedft.runtime.streaming import load_quantized

    check_quant(scheme)
    built = load_quantized(path, scheme, dtype=dtype, skip=skip)
    if built is None:
        return None
    model, layers, saved = built
    after = model_bytes(model)
    return model, QuantSummary(scheme, layers, after + saved, after)


def quantize_bundle(bundle: ModelBundle, scheme: str) -> QuantSummary:
    """Quantize a bundle's model before any LoRA is added; returns the memory summary."""
    if bundle.lora_spec is not None:
        raise ValueError("quantize the base model before adding LoRA adapters")
    summary = quantize_model(bundle.model, scheme)
    bundle.quant = summary if scheme != "none" else None
    return summary
