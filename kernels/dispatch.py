"""Choose between an op's pure-torch reference and its Triton kernel (``FEDFT_KERNELS``).

``auto`` (the default) runs Triton only on CUDA tensors when Triton imports, and falls back to
the torch path silently otherwise; CPU tensors keep today's CPU paths. ``torch`` always runs the
reference. ``triton`` runs the kernel and raises :class:`KernelUnavailableError` when it cannot:
on a CPU tensor that needs the Triton interpreter (``TRITON_INTERPRET=1``, set before Triton is
first imported). Triton is imported lazily, so a CPU-only edge device never needs it.
"""

from __future__ import annotations

import functools
import importlib
import os

import torch

from fedft.core.errors import UsageError

ENV_KERNELS = "FEDFT_KERNELS"
ENV_INTERPRET = "TRITON_INTERPRET"
CHOICES = ("auto", "torch", "triton")


class KernelUnavailableError(UsageError):
    """``FEDFT_KERNELS=triton`` was requested but the Triton kernel cannot run here."""


def requested() -> str:
    """Return the backend named by ``FEDFT_KERNELS`` (``auto`` when unset)."""
    value = os.environ.get(ENV_KERNELS, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise UsageError(f"{ENV_KERNELS}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get(ENV_INTERPRET, "0").strip().lower() in ("1", "true", "on", "yes")


@functools.cache
def triton_missing() -> str | None:
    """Return why Triton cannot be imported, or None when it can (checked once per process)."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except ImportError as exc:  # pragma: no cover - depends on the installation
        return f"Triton is not installed ({exc}); pip install 'fedft[gpu]'"
    return None


def _why_not(device: torch.device) -> str | None:
    """Return why the Triton kernel cannot run on ``device``, or None when it can."""
    missing = triton_missing()
    if missing is not None:
        return missing
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreting():
        return None
    if device.type == "cpu":
        return "Triton kernels need a CUDA tensor, or TRITON_INTERPRET=1 for CPU tensors"
    return f"Triton kernels do not run on {device.type} tensors"


def use_triton(op: str, *tensors: torch.Tensor) -> bool:
    """Decide whether ``op`` on ``tensors`` runs its Triton kernel (True) or torch (False)."""
    choice = requested()
    if choice == "torch":
        return False
    device = tensors[0].device if tensors else torch.device("cpu")
    if choice == "auto":
        # CPU tensors keep the CPU paths even under the interpreter: it is for tests, not speed.
        return device.type == "cuda" and triton_missing() is None
    reason = _why_not(device)
    if reason is not None:
        raise KernelUnavailableError(f"{ENV_KERNELS}=triton for {op}, but {reason}")
    return True
