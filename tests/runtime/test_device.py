"""The device micro-benchmark on the real tiny model, and the link-speed estimate."""

from __future__ import annotations

from collections.abc import Callable

from fedft.core.device import DeviceProfile
from fedft.core.trainer import LoraSpec
from fedft.runtime.data import Example
from fedft.runtime.device import LinkMeter, available_memory_mb, decoder_layers, measure_profile
from fedft.runtime.models import ModelBundle
from fedft.runtime.trainer import LocalTrainer


def test_profile_of_the_tiny_model(
    tiny_bundle: Callable[[], ModelBundle], chatterbot_examples: list[Example]
) -> None:
    bundle = tiny_bundle()
    trainer = LocalTrainer(bundle, chatterbot_examples[:8], max_length=48)
    flags = {n: p.requires_grad for n, p in bundle.model.named_parameters()}
    profile = measure_profile(trainer, batch_size=4, repeats=1, link_mbps=42.0)
    assert profile.num_layers == len(decoder_layers(bundle.model)) == 4
    assert profile.fwd_s > 0
    assert profile.bwd_layer_s >= 0
    assert profile.step_seconds(4) >= profile.step_seconds(1)
    assert profile.link_mbps == 42.0
    assert profile.act_layer_mb > 0
    assert profile.memory_mb > 0
    # The benchmark leaves the model as it found it: same trainable flags, no gradients.
    assert {n: p.requires_grad for n, p in bundle.model.named_parameters()} == flags
    assert all(p.grad is None for p in bundle.model.parameters())
    assert DeviceProfile.from_properties(profile.to_properties()) == profile


def test_profile_works_on_a_model_with_adapters_and_without_examples(
    tiny_bundle: Callable[[], ModelBundle],
) -> None:
    trainer = LocalTrainer(tiny_bundle(), [], max_length=48)
    trainer.add_lora(LoraSpec(rank=2, target_modules=("q_proj",)))
    before = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    profile = measure_profile(trainer, batch_size=2, repeats=1)
    assert profile.num_layers == 4
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} == before
    assert available_memory_mb() > 0


def test_link_meter_averages_real_transfers_and_ignores_tiny_ones() -> None:
    meter = LinkMeter(initial_mbps=10.0)
    meter.record(100, 1.0)  # too small to say anything
    assert meter.mbps == 10.0
    assert meter.samples == 0
    meter.record(1_000_000, 0.1)  # 80 Mbit/s
    assert meter.mbps == 80.0
    meter.record(1_000_000, 0.4)  # 20 Mbit/s, averaged in
    assert meter.mbps == 50.0
