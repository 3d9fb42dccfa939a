"""Tests for the trainable-set spec, parameter selection and the block split of the stream."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable

import pytest
import torch

from fedft.kernels.seed_ops import FlatParams
from fedft.runtime.models import ModelBundle
from fedft.strategies.seedpool.trainable import (
    block_ends,
    check_trainable,
    flat_trainable,
    select_parameters,
)


@pytest.mark.parametrize(
    "spec", ["all", "lora", "self_attn", "self_attn,mlp", r"layers\.[0-2]\.mlp, norm", "q_proj$"]
)
def test_check_trainable_accepts_valid_specs(spec: str) -> None:
    assert check_trainable(spec) is None


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "comma"),
        (" ", "comma"),
        ("a,,b", "comma"),
        ("a,", "comma"),
        ("(", "regular expression"),
        ("mlp,[", "regular expression"),
    ],
)
def test_check_trainable_rejects_invalid_specs(spec: str, why: str) -> None:
    reason = check_trainable(spec)
    assert reason is not None
    assert why in reason


def test_select_parameters_on_the_tiny_llama(tiny_bundle: Callable[[], ModelBundle]) -> None:
    model = tiny_bundle().model
    named = dict(model.named_parameters())
    everything = select_parameters(model, "all")
    assert list(everything) == list(named)
    assert all(everything[n] is named[n] for n in named)

    attention = select_parameters(model, "self_attn")
    assert attention
    assert set(attention) == {n for n in named if "self_attn" in n}
    assert len(attention) == 4 * 4  # 4 layers x (q, k, v, o)

    both = select_parameters(model, "self_attn, mlp")
    assert set(both) == {n for n in named if "self_attn" in n or ".mlp." in n}

    anchored = select_parameters(model, r"^model\.norm\.weight$")
    assert list(anchored) == ["model.norm.weight"]

    with pytest.raises(ValueError, match="LoRA"):
        select_parameters(model, "lora")
    with pytest.raises(ValueError, match="no parameter name matches"):
        select_parameters(model, "no_such_module")

    flat = flat_trainable(model, "self_attn")
    assert flat.total == sum(p.numel() for p in attention.values())
    assert list(flat.layout.names) == sorted(attention)


class WithAdapters(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = torch.nn.Linear(4, 4)
        self.lora_A = torch.nn.Parameter(torch.zeros(2, 4))
        self.lora_B = torch.nn.Parameter(torch.zeros(4, 2))


def test_select_lora_takes_only_adapter_parameters() -> None:
    assert set(select_parameters(WithAdapters(), "lora")) == {"lora_A", "lora_B"}


def test_tied_weights_appear_once() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight
    assert list(select_parameters(model, "all")) == ["0.weight"]


def test_flat_trainable_rejects_16_bit_weights() -> None:
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    with pytest.raises(ValueError, match="fp32"):
        flat_trainable(model, "all")


def flat_of(sizes: dict[str, int]) -> FlatParams:
    return FlatParams({name: torch.zeros(n) for name, n in sizes.items()})


def test_block_ends_hand_example() -> None:
    # Insertion order differs from layout order on purpose: blocks follow the sorted names.
    params = flat_of({"h": 50, "a": 10, "b": 3, "c": 3, "d": 20, "e": 4, "f": 4, "g": 4})
    assert block_ends(params, 8) == [10, 16, 36, 44, 48, 98]
    assert block_ends(params, 6) == [10, 16, 36, 40, 44, 48, 98]
    assert block_ends(params, 1000) == [98]
    assert block_ends(params, 1) == [10, 13, 16, 36, 40, 44, 48, 98]


def test_block_ends_default_target_is_point_nine_of_the_median() -> None:
    # Sizes 4, 5, 9, 11, 30: median 9, so the target is int(8.1) = 8, which keeps a (4) and b (5)
    # apart; a target of the bare median, 9, would merge them.
    params = flat_of({"a": 4, "b": 5, "c": 9, "d": 11, "e": 30})
    assert block_ends(params) == [4, 9, 18, 29, 59]
    assert block_ends(params, 0) == block_ends(params, 8)
    assert block_ends(params, 9) == [9, 18, 29, 59]


def check_blocks(params: FlatParams, ends: list[int], target: int) -> None:
    offsets = {entry.offset for entry in params.layout}
    assert ends[-1] == params.total
    assert all(a < b for a, b in itertools.pairwise(ends)), "ends strictly increase"
    assert all(e in offsets for e in ends[:-1]), "a block never splits a parameter"
    starts = [0, *ends[:-1]]
    entries = list(params.layout)
    for start, end in zip(starts, ends, strict=True):
        members = [e for e in entries if start <= e.offset < end]
        assert sum(e.numel for e in members) == end - start
        # Only a lone parameter may exceed the target; otherwise the next one did not fit.
        assert len(members) == 1 or end - start <= target
        after = [e for e in entries if e.offset == end and e.numel]
        if after:
            assert end - start + after[0].numel > target


def test_block_ends_on_the_tiny_llama(tiny_bundle: Callable[[], ModelBundle]) -> None:
    params = flat_trainable(tiny_bundle().model, "all")
    sizes = [entry.numel for entry in params.layout]
    default = int(0.9 * statistics.median(sizes))
    ends = block_ends(params)
    assert ends == block_ends(params, default)
    check_blocks(params, ends, default)
    for target in (1, 64, 5000, 20000, 10**9):
        check_blocks(params, block_ends(params, target), target)
    assert block_ends(params, 10**9) == [params.total]
    assert len(block_ends(params, 1)) == len(sizes)


def test_block_ends_with_a_trailing_empty_parameter_are_strictly_increasing() -> None:
    params = flat_of({"a": 10, "b": 0})
    ends = block_ends(params, 5)
    assert ends == [10]
