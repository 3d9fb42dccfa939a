"""The one kernel backend switch, ``FEDFT_KERNELS``: pure torch, Triton or the compiled CPU fill.

``auto`` (the default) picks the fastest path that can run and falls back silently: Triton for
ops on CUDA tensors when Triton imports, the compiled C++ Philox fill (:mod:`fedft.kernels.
rng_cpu`) for perturbations generated on the CPU when a compiler is there, the torch reference
otherwise; CPU tensors never take Triton's interpreter. ``torch`` runs the pure-torch references
everywhere (the specification). ``triton`` requires the Triton kernels and ``compiled`` the
compiled CPU fill; each leaves the other side on ``auto``, and each raises
:class:`KernelUnavailableError` when its backend cannot run here (no Triton, a CPU tensor without
``TRITON_INTERPRET=1`` set before Triton's first import, no C++ compiler). Every backend gives the
same bits. Triton is imported lazily, so a CPU-only edge device never needs it.

``FEDFT_RNG_BACKEND`` (``auto``, ``torch`` or ``compiled``) is the deprecated switch of the CPU
fill alone: it is still read, with a warning, when ``FEDFT_KERNELS`` is not set.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings

import torch

from fedft.core.errors import UsageError

ENV_KERNELS = "FEDFT_KERNELS"
ENV_LEGACY_RNG = "FEDFT_RNG_BACKEND"
ENV_INTERPRET = "TRITON_INTERPRET"
CHOICES = ("auto", "torch", "triton", "compiled")
LEGACY_RNG_CHOICES = ("auto", "torch", "compiled")


class KernelUnavailableError(UsageError):
    """The kernel backend named in the environment is unknown or cannot run here (one line)."""


def requested() -> str:
    """Return the backend named by ``FEDFT_KERNELS`` (``auto`` when unset)."""
    value = os.environ.get(ENV_KERNELS, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise KernelUnavailableError(f"{ENV_KERNELS}={value!r} is not one of {', '.join(CHOICES)}")
    return value


def rng_requested() -> tuple[str, str]:
    """Return the CPU fill's backend (``auto``, ``torch`` or ``compiled``) and the variable set.

    ``FEDFT_KERNELS`` decides when set; otherwise the deprecated ``FEDFT_RNG_BACKEND`` does.
    """
    if os.environ.get(ENV_KERNELS, "").strip():
        choice = requested()
        return (choice if choice in LEGACY_RNG_CHOICES else "auto"), ENV_KERNELS
    legacy = os.environ.get(ENV_LEGACY_RNG, "").strip().lower()
    if not legacy:
        return "auto", ENV_KERNELS
    if legacy not in LEGACY_RNG_CHOICES:
        raise KernelUnavailableError(
            f"{ENV_LEGACY_RNG}={legacy!r} is not one of {', '.join(LEGACY_RNG_CHOICES)}"
        )
    # FutureWarning, not DeprecationWarning: the variable is set by users, who would not see
    # the latter. The warnings module shows it once per calling line.
    warnings.warn(
        f"{ENV_LEGACY_RNG} is deprecated; set {ENV_KERNELS}={legacy} instead",
        FutureWarning,
        stacklevel=3,
    )
    return legacy, ENV_LEGACY_RNG


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
    if choice in ("auto", "compiled"):
        # CPU tensors keep the CPU paths even under the interpreter: it is for tests, not speed.
        return device.type == "cuda" and triton_missing() is None
    reason = _why_not(device)
    if reason is not None:
        raise KernelUnavailableError(f"{ENV_KERNELS}=triton for {op}, but {reason}")
    return True
