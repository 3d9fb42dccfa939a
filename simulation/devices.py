"""Synthetic device populations for simulation: ``--device-mix fast:2,medium:4,slow:2``."""

from __future__ import annotations

from collections.abc import Sequence

from fedft.core.device import TIERS, tier_profile, virtual_seconds
from fedft.core.errors import UsageError

DEVICE_MIX_HELP = (
    "synthetic device population TIER:COUNT,... over the clients in id order; tiers: "
    + ", ".join(f"{k} ({t.slowdown:g}x slower, {t.link_mbps:g} Mbit/s)" for k, t in TIERS.items())
    + "; each client's reported seconds are its measured CPU time x slowdown + bytes / link"
)


def parse_device_mix(mix: str) -> list[str]:
    """Expand ``fast:2,slow:1`` into ``["fast", "fast", "slow"]``; '' gives []."""
    tiers: list[str] = []
    for part in (p.strip() for p in mix.split(",") if p.strip()):
        name, sep, count = part.partition(":")
        if name not in TIERS:
            raise UsageError(f"--device-mix: unknown tier {name!r}; tiers: {', '.join(TIERS)}")
        try:
            n = int(count) if sep else 1
        except ValueError:
            raise UsageError(f"--device-mix: {part!r} is not TIER:COUNT") from None
        if n < 0:
            raise UsageError(f"--device-mix: negative count in {part!r}")
        tiers.extend([name] * n)
    return tiers


def assign_tiers(mix: str, client_ids: Sequence[str]) -> dict[str, str]:
    """Give every client (in id order) its tier; the counts must add up to the clients."""
    tiers = parse_device_mix(mix)
    if len(tiers) != len(client_ids):
        raise UsageError(
            f"--device-mix describes {len(tiers)} devices but there are {len(client_ids)} clients"
        )
    return dict(zip(sorted(client_ids), tiers, strict=True))


__all__ = ["TIERS", "assign_tiers", "parse_device_mix", "tier_profile", "virtual_seconds"]
