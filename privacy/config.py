"""Settings of client-level DP and of the canary audit, validated when built."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from fedft.core.errors import UsageError

SEEDED = "seeded"
SECRET = "secret"
SAMPLINGS = (SEEDED, SECRET)
DISTRIBUTED_NEEDS_SECAGG = (
    "--dp-distributed needs --secagg: the noise shares only hide each other inside a secure sum"
)


@dataclass(frozen=True)
class DPConfig:
    """Client-level DP-FedAvg settings for the server-side wrapper.

    Each round, clients are sampled independently with ``sampling_rate``; each update vector
    is clipped to L2 norm ``clip``; the clipped sum gets N(0, (noise_multiplier * clip)^2) per
    coordinate and is divided by the *expected* number of participants.
    """

    noise_multiplier: float
    clip: float
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_stddev: float | None = None
    sampling_rate: float = 1.0
    canaries: int = 0
    unseen_canaries: int | None = None
    all_iterates: bool = False
    # "seeded": Poisson sampling from (seed, round, client): reproducible, for simulations, and
    # not secret. "secret": a CSPRNG draws it, as amplification by sampling assumes; the
    # coordinator's choice (defect 12). Runs stored without the key were seeded.
    sampling: str = "seeded"
    # Distributed DP (with --secagg): every device adds 1/min_survivors of the noise variance
    # itself, so the coordinator never sees a sum without noise (0: 70% of each round).
    distributed: bool = False
    min_survivors: int = 0

    def __post_init__(self) -> None:
        z = self.noise_multiplier
        problems = [
            (math.isfinite(z) and z >= 0, f"--dp-noise must be >= 0, got {z}"),
            (math.isfinite(self.clip) and self.clip > 0, f"--dp-clip must be > 0, got {self.clip}"),
            (0 < self.target_quantile < 1, "the target quantile must be in (0, 1)"),
            (self.clip_lr > 0, "the clip learning rate must be > 0"),
            (
                self.count_stddev is None or self.count_stddev > 0,
                "--dp-count-stddev must be > 0",
            ),
            (
                0 < self.sampling_rate <= 1,
                f"--dp-sampling-rate must be in (0, 1], got {self.sampling_rate}",
            ),
            (self.canaries >= 0, f"--canaries must be >= 0, got {self.canaries}"),
            (self.sampling in SAMPLINGS, f"sampling must be one of {SAMPLINGS}"),
            (
                self.unseen_canaries is None or self.unseen_canaries >= 0,
                "the number of unseen canaries must be >= 0",
            ),
            (
                self.min_survivors == 0 or self.min_survivors >= 2,
                f"--dp-min-survivors must be >= 2, got {self.min_survivors}",
            ),
            (
                self.distributed or self.min_survivors == 0,
                "--dp-min-survivors needs --dp-distributed",
            ),
            (
                not (self.distributed and self.adaptive),
                "--dp-distributed needs a fixed --dp-clip: devices add noise for the clip they "
                "are told, and --dp-adaptive would need each device's clipped-or-not bit",
            ),
        ]
        for ok, message in problems:
            if not ok:
                raise UsageError(message)

    @property
    def unseen(self) -> int:
        """Unseen canaries: as many as seen ones unless set."""
        return self.canaries if self.unseen_canaries is None else self.unseen_canaries

    def to_dict(self) -> dict[str, Any]:
        """Plain values (stored with a run so that a restart keeps the same mechanism)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DPConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (DP settings must not vanish)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown DP settings: {', '.join(unknown)}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise UsageError(f"DP settings: {exc}") from None


def dp_config_from_flags(
    *,
    noise: float | None,
    clip: float | None,
    adaptive: bool,
    sampling_rate: float,
    count_stddev: float | None,
    canaries: int,
    all_iterates: bool,
    distributed: bool = False,
    min_survivors: int = 0,
) -> DPConfig | None:
    """Return the DP settings the ``--dp-*`` flags ask for, or None without ``--dp-noise``."""
    if noise is None:
        extras = [
            (clip is not None, "--dp-clip"),
            (adaptive, "--dp-adaptive"),
            (sampling_rate != 1.0, "--dp-sampling-rate"),
            (count_stddev is not None, "--dp-count-stddev"),
            (canaries != 0, "--canaries"),
            (all_iterates, "--canary-iterates"),
            (distributed, "--dp-distributed"),
            (min_survivors != 0, "--dp-min-survivors"),
        ]
        for given, flag in extras:
            if given:
                raise UsageError(f"{flag} needs --dp-noise (use --dp-noise 0 for no noise)")
        return None
    if clip is None:
        raise UsageError("--dp-noise needs --dp-clip (the initial clip norm if adaptive)")
    return DPConfig(
        noise_multiplier=noise,
        clip=clip,
        adaptive=adaptive,
        sampling_rate=sampling_rate,
        count_stddev=count_stddev,
        canaries=canaries,
        all_iterates=all_iterates,
        distributed=distributed,
        min_survivors=min_survivors,
    )


@dataclass(frozen=True)
class LocalDPConfig:
    """Clip norm and noise multiplier applied on the client."""

    clip: float
    noise_multiplier: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"--local-dp-clip must be > 0, got {self.clip}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise UsageError(f"--local-dp-noise must be >= 0, got {self.noise_multiplier}")


def local_dp_config_from_flags(*, clip: float | None, noise: float) -> LocalDPConfig | None:
    """Return the client-side DP the ``--local-dp-*`` flags ask for, or None without a clip."""
    if clip is None:
        if noise:
            raise UsageError("--local-dp-noise needs --local-dp-clip")
        return None
    return LocalDPConfig(clip=clip, noise_multiplier=noise)


def check_server_wrappers(*, dp: bool, robust: bool, fedau: bool) -> None:
    """Refuse server-side wrappers that do not combine: one rule for every host, before any work."""
    if robust and dp:
        raise UsageError("--robust and --dp-noise do not combine: DP already clips every update")
    if fedau and dp:
        # DP's sensitivity assumes each clipped update enters the sum with weight 1.
        raise UsageError("--participation fedau cannot be combined with --dp-noise")
    if fedau and robust:
        raise UsageError("--participation fedau and --robust do not combine")
