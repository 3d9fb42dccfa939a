"""Where training runs: ``--device auto|cpu|cuda|cuda:N`` resolved once, checked before loading."""

from __future__ import annotations

import torch

from fedft.core.device import check_device_name
from fedft.core.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """Turn a ``--device`` value into the torch device to train on; a missing GPU is an error."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA GPU that torch can use")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise UsageError(f"--device {name}: there are only {count} CUDA device(s)")
    return torch.device("cuda", device.index if device.index is not None else 0)


def describe_device(device: torch.device) -> str:
    """A short human name for the report: ``cpu`` or ``cuda:0 (NVIDIA H200)``."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated on ``device`` so far, in MB; None on the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1e6
