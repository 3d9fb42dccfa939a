"""Which layers of one device carry LoRA and at which rank; travels in the task config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedft.core.layout import LAYER_LIST
from fedft.core.payload import ConfigValue
from fedft.core.trainer import LoraSpec


@dataclass(frozen=True)
class Layout:
    """A device's LoRA configuration: ``layers`` (ascending) and one rank per layer."""

    layers: tuple[int, ...]
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.layers or len(self.layers) != len(self.ranks):
            raise ValueError("a layout needs one rank per layer and at least one layer")
        if list(self.layers) != sorted(set(self.layers)) or self.layers[0] < 0:
            raise ValueError(f"layers must be distinct, ascending and >= 0: {self.layers}")
        if min(self.ranks) < 1:
            raise ValueError(f"ranks must be >= 1: {self.ranks}")

    @property
    def depth(self) -> int:
        """LoRA depth: how many layers carry adapters."""
        return len(self.layers)

    def rank_of(self, layer: int) -> int | None:
        """Rank at ``layer``, or None when the layer carries no adapter."""
        try:
            return self.ranks[self.layers.index(layer)]
        except ValueError:
            return None

    @classmethod
    def top(cls, layers: Sequence[int], ranks: Sequence[int]) -> Layout:
        """The top ``len(ranks)`` of ``layers``, ranks given bottom to top."""
        chosen = sorted(layers)[len(layers) - len(ranks) :]
        return cls(tuple(chosen), tuple(ranks))

    def to_config(self) -> dict[str, ConfigValue]:
        """Task-config entries (flat lists) that describe this layout."""
        return {
            "lora_layers": list(self.layers),
            "lora_ranks": list(self.ranks),
            "lora_depth": self.depth,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, ConfigValue]) -> Layout:
        """Read a layout written by :meth:`to_config`."""
        layers, ranks = config.get("lora_layers"), config.get("lora_ranks")
        if not isinstance(layers, list) or not isinstance(ranks, list):
            raise ValueError("the task names no lora_layers / lora_ranks")
        return cls(tuple(int(v) for v in layers), tuple(int(v) for v in ranks))

    def lora_spec(self, *, alpha: int, dropout: float, target_modules: Sequence[str]) -> LoraSpec:
        """The PEFT adapter layout: the top rank by default, other layers by ``rank_pattern``.

        PEFT scales each module by ``alpha / its rank``, which the server's arithmetic mirrors.
        """
        top = self.ranks[-1]
        pattern = {
            rf"{LAYER_LIST}\.{layer}\..*": r
            for layer, r in zip(self.layers, self.ranks, strict=True)
            if r != top
        }
        return LoraSpec(
            rank=top,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(target_modules),
            rank_pattern=pattern,
            layers=self.layers,
        )
