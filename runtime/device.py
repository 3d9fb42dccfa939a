"""Measure this device's profile: memory, a timed micro-benchmark of the model, link speed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fedft.core.device import DeviceProfile
from fedft.runtime.batching import collate, token_losses
from fedft.runtime.trainer import LocalTrainer

DEFAULT_LINK_MBPS = 100.0  # until a transfer has been timed


def available_memory_mb(device: torch.device | None = None) -> float:
    """Memory free for training: the GPU's free memory on a CUDA device, else MemAvailable."""
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 1e6
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) / 1e6


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks (the longest ModuleList)."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not lists:
        raise ValueError("the model has no stack of transformer layers")
    return max(lists, key=len)


@contextmanager
def _trainable_top(
    model: torch.nn.Module, layers: torch.nn.ModuleList, depth: int
) -> Iterator[None]:
    """Temporarily make only the top ``depth`` layers trainable, then restore every flag."""
    saved = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in list(layers)[len(layers) - depth :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        yield
    finally:
        for p, flag in saved.items():
            p.requires_grad_(flag)
            p.grad = None


def _step_seconds(model: torch.nn.Module, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Fastest of ``repeats`` timed forward+backward passes (CPU time of this process on CPU)."""
    device = next(model.parameters()).device
    on_gpu = device.type == "cuda"
    clock = time.perf_counter if on_gpu else time.process_time
    best = float("inf")
    for i in range(repeats + 1):
        start = clock()
        loss, tokens = token_losses(model, batch)
        (loss / max(tokens, 1)).backward()  # type: ignore[no-untyped-call]
        if on_gpu:
            torch.cuda.synchronize(device)
        if i > 0:  # the first pass warms caches and allocators
            best = min(best, clock() - start)
    return best


def measure_profile(
    trainer: LocalTrainer,
    *,
    batch_size: int = 8,
    repeats: int = 2,
    link_mbps: float = DEFAULT_LINK_MBPS,
) -> DeviceProfile:
    """Time one training step with the top layer and with every layer trainable.

    ``step(D) = fwd + D * bwd_layer`` is fitted through the two points; the backward pass stops
    below the lowest trainable layer, which is the saving LoRA depth buys. The activation memory
    per layer is estimated from the model's shape (Korthikanti et al., 2022, fp32).
    """
    model = trainer.model
    layers = decoder_layers(model)
    n = len(layers)
    bundle = trainer.bundle
    items = trainer.encoded[:batch_size] if trainer.examples else []
    if items:
        batch = collate(items, bundle.tokenizer.pad_token_id)
    else:
        ids = torch.full((batch_size, 64), bundle.tokenizer.eos_token_id or 0, dtype=torch.long)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            with _trainable_top(model, layers, 1):
                top = _step_seconds(model, batch, repeats)
            with _trainable_top(model, layers, n):
                full = _step_seconds(model, batch, repeats)
    finally:
        model.train(was_training)
    bwd_layer = max((full - top) / max(n - 1, 1), 0.0)
    fwd = max(top - bwd_layer, 1e-6)
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    b, s = batch["input_ids"].shape
    act_bytes = 2 * s * b * hidden * (34 + 5 * heads * s / max(hidden, 1))
    # The weights are loaded already: what is free now plus what they take is the memory the
    # device has for the model, the planner's budget (it counts the base weights itself).
    base_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    return DeviceProfile(
        fwd_s=fwd,
        bwd_layer_s=bwd_layer,
        num_layers=n,
        memory_mb=available_memory_mb(bundle.device) + base_mb,
        base_mb=base_mb,
        act_layer_mb=act_bytes / 1e6,
        link_mbps=link_mbps,
    )


class LinkMeter:
    """Estimates link speed from timed transfers (an exponential moving average)."""

    def __init__(self, initial_mbps: float = DEFAULT_LINK_MBPS, smoothing: float = 0.5):
        self.mbps = initial_mbps
        self.smoothing = smoothing
        self.samples = 0

    def record(self, num_bytes: int, seconds: float) -> None:
        """Fold one transfer in; tiny or instant ones say nothing about bandwidth."""
        if num_bytes < 4096 or seconds <= 0:
            return
        rate = num_bytes * 8 / seconds / 1e6
        self.mbps = (
            rate if self.samples == 0 else (1 - self.smoothing) * self.mbps + self.smoothing * rate
        )
        self.samples += 1
