"""Kernel tests run the real Triton kernels: on a CUDA device, else in Triton's CPU interpreter.

``TRITON_INTERPRET`` must be set before Triton is first imported, which the dispatcher defers
until a kernel is launched; tests pick ``DEVICE`` (cuda when present, else cpu).
"""

from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")


@pytest.fixture
def force_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every dispatched op on its Triton kernel for the duration of a test."""
    monkeypatch.setenv("FEDFT_KERNELS", "triton")
