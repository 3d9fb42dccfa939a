"""Device profiles as flat client properties, and simulated tiers."""

from __future__ import annotations

import pytest

from fedft.core.device import TIERS, DeviceProfile, tier_profile, virtual_seconds

BASE = DeviceProfile(
    fwd_s=0.2, bwd_layer_s=0.05, num_layers=30, memory_mb=8000.0, act_layer_mb=50.0, link_mbps=80.0
)


def test_properties_round_trip_and_incomplete_ones_read_as_none() -> None:
    props = BASE.to_properties()
    assert all(k.startswith("device.") and isinstance(v, float) for k, v in props.items())
    assert DeviceProfile.from_properties(props) == BASE
    assert DeviceProfile.from_properties({}) is None
    partial = dict(props)
    del partial["device.fwd_s"]
    assert DeviceProfile.from_properties(partial) is None
    assert DeviceProfile.from_properties({**props, "device.num_layers": 0.0}) is None
    no_slowdown = {k: v for k, v in props.items() if k != "device.slowdown"}
    assert DeviceProfile.from_properties(no_slowdown) == BASE  # older clients send none


def test_time_model() -> None:
    assert BASE.step_seconds(0) == pytest.approx(0.2)
    assert BASE.step_seconds(10) == pytest.approx(0.7)
    assert BASE.transfer_seconds(10_000_000) == pytest.approx(1.0)  # 80 Mbit at 80 Mbit/s
    with pytest.raises(ValueError, match="num_layers"):
        DeviceProfile(
            fwd_s=1, bwd_layer_s=1, num_layers=0, memory_mb=1, act_layer_mb=1, link_mbps=1
        )


def test_tiers_slow_the_measured_profile_down() -> None:
    slow = tier_profile(BASE, "slow")
    assert slow.slowdown == TIERS["slow"].slowdown == 4.0
    assert slow.step_seconds(30) == pytest.approx(4 * BASE.step_seconds(30))
    assert slow.link_mbps == TIERS["slow"].link_mbps
    assert tier_profile(BASE, "fast").step_seconds(3) == pytest.approx(BASE.step_seconds(3))
    # Virtual clock: CPU time x slowdown + bytes over the tier's link.
    assert virtual_seconds(2.0, 625_000, slow) == pytest.approx(8.0 + 1.0)


def test_stamp_counts_the_task_download_and_the_reply_as_sent() -> None:
    import torch

    from fedft.core.device import CPU_SECONDS, TASK_SECONDS, stamp_task_seconds
    from fedft.core.payload import Payload
    from fedft.core.serde import payload_to_bytes

    slow = tier_profile(BASE, "slow")
    reply = Payload(tensors={"w": torch.zeros(1000)}, metrics={"train_loss": 1.5})
    seconds = stamp_task_seconds(reply, 0.25, 40_000, slow)
    up = len(payload_to_bytes(reply))  # the reply exactly as it will travel, stamp included
    assert up > 4000
    assert seconds == 0.25 * 4 + (40_000 + up) * 8 / (5.0 * 1e6)
    assert reply.metrics[TASK_SECONDS] == seconds
    assert reply.metrics[CPU_SECONDS] == 0.25
    # An earlier stamp of another value leaves the size (and so the time) unchanged.
    assert stamp_task_seconds(reply, 0.25, 40_000, slow) == seconds
