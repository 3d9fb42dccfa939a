"""PEFT glue: LoRA layers on a ``QuantLinear`` base (PEFT's custom-module mapping)."""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora.layer import Linear as LoraLinear

from fedft.kernels.quant_linear import QuantLinear


class QuantLoraLinear(LoraLinear):
    """PEFT's LoRA ``Linear`` whose base layer is a frozen ``QuantLinear``.

    The forward is PEFT's: ``base(x) + B(A(dropout(x))) * scaling``. The adapter weights and
    their state-dict names are those of a plain ``nn.Linear`` base, so an exported adapter loads
    on the unquantized model. Merging would need the weight in full precision, so it is refused.
    """

    def _get_in_out_features(self, module: torch.nn.Module) -> tuple[int, int]:
        if not isinstance(module, QuantLinear):
            raise TypeError(f"QuantLoraLinear needs a QuantLinear base, got {type(module)}")
        return module.in_features, module.out_features

    def merge(self, *args: Any, **kwargs: Any) -> None:
        """Refuse: a quantized base cannot absorb the adapter without re-quantizing it."""
        raise NotImplementedError("cannot merge LoRA into a quantized base; load it unquantized")


def register(config: Any) -> None:
    """Tell a ``LoraConfig`` to wrap ``QuantLinear`` layers with :class:`QuantLoraLinear`."""
    config._register_custom_module({QuantLinear: QuantLoraLinear})
