"""Tests for the kernel dispatcher: FEDFT_KERNELS choices, silent auto fallback, loud requests."""

from __future__ import annotations

import pytest
import torch

from fedft.core.errors import UsageError
from fedft.kernels import dispatch
from fedft.kernels.dispatch import KernelUnavailableError, use_triton


def test_auto_keeps_cpu_tensors_on_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDFT_KERNELS", raising=False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # even with the interpreter available
    assert dispatch.requested() == "auto"
    assert use_triton("seeded.perturb", torch.zeros(4)) is False


def test_torch_request_never_uses_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", "torch")
    assert use_triton("quant.dequantize", torch.zeros(4)) is False


def test_triton_request_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    # Patch the check, not TRITON_INTERPRET: Triton reads it once, when first imported.
    monkeypatch.setattr(dispatch, "interpreting", lambda: False)
    with pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1"):
        use_triton("seeded.replay", torch.zeros(4))
    monkeypatch.setattr(dispatch, "interpreting", lambda: True)
    assert use_triton("seeded.replay", torch.zeros(4)) is True


def test_interpreting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert dispatch.interpreting() is False
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.interpreting() is True


def test_triton_request_without_triton_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    monkeypatch.setattr(dispatch, "triton_missing", lambda: "Triton is not installed")
    with pytest.raises(KernelUnavailableError, match="not installed"):
        use_triton("seeded.fill", torch.zeros(4))
    monkeypatch.setenv("FEDFT_KERNELS", "auto")
    assert use_triton("seeded.fill", torch.zeros(4)) is False


def test_unknown_choice_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", "cuda")
    with pytest.raises(UsageError, match="FEDFT_KERNELS"):
        use_triton("seeded.fill", torch.zeros(4))


def test_meta_tensors_are_refused_under_an_explicit_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
    with pytest.raises(KernelUnavailableError, match="meta"):
        use_triton("seeded.fill", torch.zeros(4, device="meta"))


def test_one_switch_also_picks_the_cpu_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDFT_RNG_BACKEND", raising=False)
    monkeypatch.delenv("FEDFT_KERNELS", raising=False)
    assert dispatch.rng_requested() == ("auto", "FEDFT_KERNELS")
    for choice, fill in [("torch", "torch"), ("compiled", "compiled"), ("triton", "auto")]:
        monkeypatch.setenv("FEDFT_KERNELS", choice)
        assert dispatch.rng_requested() == (fill, "FEDFT_KERNELS")
    # ``compiled`` concerns the CPU fill only: tensors stay on the torch path, as under auto.
    monkeypatch.setenv("FEDFT_KERNELS", "compiled")
    assert use_triton("seeded.fill", torch.zeros(4)) is False
