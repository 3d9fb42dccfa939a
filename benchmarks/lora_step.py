"""One LoRA training step: fedft's trainer against plain transformers + PEFT, side by side.

Same model file, same LoRA (rank 8, alpha 16, every linear projection), same batch shape
(``--batch-size`` examples of ``--tokens`` tokens), same device, in one process: the plain loop
is ``model(input_ids, labels) -> backward -> AdamW`` with the batch already on the device;
fedft's is ``LocalTrainer.train`` as every LoRA strategy calls it (batches collated on the CPU and
moved, answer-token loss, gradient clipping, AdamW). Prints ms per step and the ratio; asserts
nothing. Issue 23's goal: fedft within 1.5x of plain PEFT on the same GPU.

Examples::

    python benchmarks/lora_step.py --model tiny --device cpu
    python benchmarks/lora_step.py --model /path/to/smollm2-shaped --device cuda --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from fedft.core.trainer import LoraSpec
from fedft.runtime.assembly import place
from fedft.runtime.batching import collate
from fedft.runtime.data import Example
from fedft.runtime.models import load_model
from fedft.runtime.placement import peak_memory_mb, resolve_device
from fedft.runtime.trainer import LocalTrainer

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def long_examples(count: int, words: int) -> list[Example]:
    """Dialog examples long enough to fill ``--tokens`` after truncation (no padding waste)."""
    text = " ".join(f"word{i % 97}" for i in range(words))
    return [Example(prompt=f"question {i}: {text}", response=text) for i in range(count)]


def sync(device: torch.device) -> Callable[[], None]:
    """Wait for the device's queued work (timings on a GPU are asynchronous)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def time_steps(run: Callable[[int], object], steps: int, wait: Callable[[], None]) -> float:
    """Seconds per step of ``run(steps)`` after a warm-up of 2 steps."""
    run(2)
    wait()
    start = time.perf_counter()
    run(steps)
    wait()
    return (time.perf_counter() - start) / steps


def plain_peft(
    model_spec: str, batch: dict[str, torch.Tensor], device: torch.device
) -> Callable[[int], None]:
    """The reference loop: transformers' own loss, PEFT LoRA, AdamW, batch resident on device."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        load_model(model_spec).model,
        LoraConfig(r=8, lora_alpha=16, target_modules=list(ALL_LINEAR), task_type="CAUSAL_LM"),
    ).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    on_device = {k: v.to(device) for k, v in batch.items()}

    def run(steps: int) -> None:
        for _ in range(steps):
            loss = model(**on_device).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def ours(
    model_spec: str, examples: list[Example], args: argparse.Namespace, device: torch.device
) -> tuple[LocalTrainer, Callable[[int], object]]:
    """Fedft's path: the model placed by the assembly point, trained by LocalTrainer."""
    bundle = load_model(model_spec)
    place(bundle, device)
    trainer = LocalTrainer(bundle, examples, max_length=args.tokens)
    trainer.add_lora(LoraSpec(rank=8, alpha=16, target_modules=ALL_LINEAR))

    def run(steps: int) -> object:
        return trainer.train(steps=steps, batch_size=args.batch_size, lr=1e-4, seed=0)

    return trainer, run


def main() -> None:
    """Time both loops and print the ratio (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="preset or local checkpoint folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per example")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per loop")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    wait = sync(device)
    examples = long_examples(4 * args.batch_size, args.tokens)
    trainer, run_ours = ours(args.model, examples, args, device)
    batch = collate(trainer.encoded[: args.batch_size], trainer.bundle.tokenizer.pad_token_id)
    tokens = tuple(batch["input_ids"].shape)
    fedft_s = time_steps(run_ours, args.steps, wait)
    fedft_peak = peak_memory_mb(device)
    del trainer, run_ours
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    plain_s = time_steps(plain_peft(args.model, batch, device), args.steps, wait)
    plain_peak = peak_memory_mb(device)
    figures = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "model": args.model,
        "batch": list(tokens),
        "fedft_ms": round(fedft_s * 1e3, 2),
        "plain_peft_ms": round(plain_s * 1e3, 2),
        "ratio": round(fedft_s / plain_s, 3),
        "fedft_peak_mb": fedft_peak,
        "plain_peak_mb": plain_peak,
    }
    print(
        f"{figures['device']}, batch {tokens[0]} x {tokens[1]} tokens: fedft "
        f"{figures['fedft_ms']} ms/step, plain PEFT {figures['plain_peft_ms']} ms/step, "
        f"ratio {figures['ratio']}x (goal <= 1.5x)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
