"""A device's measured capacity, carried to the server as flat ``device.*`` client properties."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch stays out of `fedft --help`, which reads the tiers
    from fedft.core.payload import Payload

PREFIX = "device."
DEVICE_HELP = (
    "where local training runs: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda "
    "or cuda:N; model, adapters, optimizer state and batches all live there"
)
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")
# Reply metrics a client attaches: its time for the task, and (simulated devices) its CPU time.
TASK_SECONDS = "client_seconds"
CPU_SECONDS = "client_cpu_seconds"
# Client property: 1.0 when the device trains on a CUDA GPU, 0.0 on its CPU.
CUDA_PROPERTY = PREFIX + "cuda"


def check_device_name(name: str) -> str:
    """Validate the spelling of a ``--device`` value without touching torch or CUDA."""
    from fedft.core.errors import UsageError

    if not _DEVICE_NAME.fullmatch(name):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


@dataclass(frozen=True)
class DeviceProfile:
    """What a client measured about itself (or what a simulation assigned to it).

    The time model is ``step_seconds(D) = fwd_s + D * bwd_layer_s``: every step runs the whole
    forward pass, while the backward pass stops below the lowest layer that carries LoRA. Times
    are for one training step at the run's batch size; ``slowdown`` is 1 on real devices and
    the tier's factor on simulated ones (already folded into the two times).
    """

    fwd_s: float
    bwd_layer_s: float
    num_layers: int
    memory_mb: float
    act_layer_mb: float
    link_mbps: float
    slowdown: float = 1.0
    # Memory the base weights take; ``memory_mb`` includes it (the device's memory for the
    # model and its training). Absent from older clients' properties: 0.
    base_mb: float = 0.0

    def __post_init__(self) -> None:
        numbers = (self.fwd_s, self.bwd_layer_s, self.memory_mb, self.act_layer_mb, self.link_mbps)
        if not all(math.isfinite(v) for v in (*numbers, self.slowdown)):
            raise ValueError("device profile values must be finite")
        if self.fwd_s < 0 or self.bwd_layer_s < 0:
            raise ValueError("device step times must be >= 0")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.link_mbps <= 0 or self.slowdown <= 0:
            raise ValueError("link_mbps and slowdown must be > 0")
        if not (math.isfinite(self.base_mb) and self.base_mb >= 0):
            raise ValueError("base_mb must be finite and >= 0")

    def step_seconds(self, depth: int) -> float:
        """Predicted seconds of one training step with LoRA on the top ``depth`` layers."""
        return self.fwd_s + depth * self.bwd_layer_s

    def transfer_seconds(self, num_bytes: int) -> float:
        """Predicted seconds to move ``num_bytes`` over the device's link."""
        return num_bytes * 8 / (self.link_mbps * 1e6)

    def to_properties(self) -> dict[str, float]:
        """Flatten into ``device.*`` numbers, the form ClientInfo.properties carries."""
        return {PREFIX + k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_properties(cls, properties: Mapping[str, object]) -> DeviceProfile | None:
        """Read a profile back from client properties; None when it is absent or incomplete."""
        values: dict[str, float | int] = {}
        for f in fields(cls):
            raw = properties.get(PREFIX + f.name)
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                if f.name in ("slowdown", "base_mb"):
                    continue
                return None
            values[f.name] = int(raw) if f.name == "num_layers" else float(raw)
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError:
            return None

    def scaled(self, slowdown: float, link_mbps: float, memory_mb: float) -> DeviceProfile:
        """Return this (measured) profile as a device ``slowdown`` times slower, for simulation."""
        return DeviceProfile(
            fwd_s=self.fwd_s * slowdown,
            bwd_layer_s=self.bwd_layer_s * slowdown,
            num_layers=self.num_layers,
            memory_mb=memory_mb,
            act_layer_mb=self.act_layer_mb,
            link_mbps=link_mbps,
            slowdown=self.slowdown * slowdown,
            base_mb=self.base_mb,
        )


@dataclass(frozen=True)
class Tier:
    """A simulated device class: times slower than this machine, its link and its memory."""

    slowdown: float
    link_mbps: float
    memory_mb: float


# Simulated populations (`fedft simulate --device-mix`, `fedft client --simulate-device`).
TIERS = {
    "fast": Tier(slowdown=1.0, link_mbps=100.0, memory_mb=16000.0),
    "medium": Tier(slowdown=2.0, link_mbps=20.0, memory_mb=8000.0),
    "slow": Tier(slowdown=4.0, link_mbps=5.0, memory_mb=4000.0),
}


def tier_profile(base: DeviceProfile, tier: str) -> DeviceProfile:
    """This machine's measured profile, as a device of ``tier`` would report it."""
    t = TIERS[tier]
    return base.scaled(t.slowdown, t.link_mbps, t.memory_mb)


def virtual_seconds(cpu_seconds: float, num_bytes: int, profile: DeviceProfile) -> float:
    """A simulated device's time: this machine's CPU time slowed to the tier, plus transfers."""
    return cpu_seconds * profile.slowdown + profile.transfer_seconds(num_bytes)


def stamp_task_seconds(
    update: Payload, cpu_seconds: float, down_bytes: int, profile: DeviceProfile
) -> float:
    """Put a simulated device's time for one task on its reply; return that time.

    The time is ``cpu_seconds`` slowed to the device plus the task's own bytes over its link:
    the task it downloaded (``down_bytes``) and this very reply going up. Every host stamps its
    replies here, so engines given the same CPU time report the same seconds.
    """
    from fedft.core.serde import payload_to_bytes

    update.metrics[CPU_SECONDS] = float(cpu_seconds)
    # A float metric has a fixed wire size whatever its value, so the placeholder measures the
    # reply exactly as it will be sent.
    update.metrics[TASK_SECONDS] = 0.0
    up_bytes = len(payload_to_bytes(update))
    seconds = virtual_seconds(cpu_seconds, down_bytes + up_bytes, profile)
    update.metrics[TASK_SECONDS] = float(seconds)
    return seconds
