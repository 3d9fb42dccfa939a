"""Train several clients' LoRA adapters at once: one forward/backward per step for all of them.

Each client keeps everything it has when it trains alone: its own batches (the same draws
:meth:`LocalTrainer.train` makes), its own adapter layout and factors, its own loss normalisation
(its answer tokens), its own gradient clipping and its own optimizer state. What is shared is
the base model's forward and backward over the packed rows of all clients, which is where the
time of a small client goes. With LoRA dropout at 0 the adapters equal sequential training to
floating-point tolerance; with dropout on, the masks come from one shared stream instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fedft.core.layout import A_SUFFIX, B_SUFFIX
from fedft.core.trainer import LoraSpec, TrainStats
from fedft.runtime.batching import IGNORE_INDEX, Encoded, collate, segment_losses
from fedft.runtime.grouped_lora import GroupedLora, ModuleAdapter, Segment
from fedft.runtime.trainer import (
    LocalTrainer,
    check_adapter_match,
    check_training,
    foreach_for,
    make_optimizer,
)

# A shared forward may pad up to this many times the tokens its clients would pad training alone.
PAD_SLACK = 1.25
# Tokens (rows x width) of one shared forward. On a CPU, activations beyond the caches make every
# elementwise op memory-bound: 128 tiny-model clients in one forward ran at 0.49x of one client
# at a time; 1,024 tokens ran best of 1,024/2,048/4,096 (docs/results.md). A GPU wants large
# forwards (small ones are launch-bound) and has the memory for them.
FORWARD_TOKENS = {"cpu": 1024, "cuda": 32768}


@dataclass
class TrainJob:
    """One client's call of ``train``, as its strategy made it, with the adapter it starts from.

    ``spec`` is the layout to train (None: the one the model has active); ``tensors`` the
    starting factors under PEFT's names (None: the model's current ones for that layout).
    """

    trainer: LocalTrainer
    spec: LoraSpec | None
    tensors: Mapping[str, torch.Tensor] | None
    steps: int
    batch_size: int
    lr: float
    seed: int
    optimizer: str = "adamw"
    max_grad_norm: float | None = 1.0
    data_seed: int | None = None
    data_offset: int = 0


@dataclass
class JobResult:
    """What one client's training gave: its stats and its trained factors (fp32, CPU)."""

    stats: TrainStats
    tensors: dict[str, torch.Tensor]


@dataclass
class _Client:
    """A job's live state during training."""

    job: TrainJob
    number: int
    names: list[str]
    params: list[torch.Tensor]
    adapters: dict[str, ModuleAdapter]
    batches: Any
    loss: float = 0.0
    tokens: int = 0
    examples: int = 0


def _answer_count(item: Encoded) -> int:
    """The next-token targets of one example that are answer tokens (see ``answer_tokens``)."""
    return sum(1 for label in item.labels[1:] if label != IGNORE_INDEX)


def _check(job: TrainJob) -> None:
    if job.steps < 1:
        raise ValueError(f"steps must be >= 1, got {job.steps}")
    if job.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {job.batch_size}")
    check_training(job.trainer.examples, job.max_grad_norm)


def _client(number: int, job: TrainJob, device: torch.device) -> _Client:
    """Switch the shared model to the job's layout and copy the job's factors into leaves."""
    trainer = job.trainer
    if job.spec is not None:
        trainer.use_lora(job.spec)
    live = trainer.adapter_parameters()
    start = dict(job.tensors) if job.tensors is not None else trainer.lora_state()
    check_adapter_match(live, start)
    adapter_name = trainer.active_adapter
    names = sorted(live)
    params = {
        name: start[name].to(device, live[name].dtype, copy=True).requires_grad_(True)
        for name in names
    }
    adapters: dict[str, ModuleAdapter] = {}
    for name in names:
        if not name.endswith(A_SUFFIX):
            continue
        path = name.removesuffix(A_SUFFIX)
        layer: Any = trainer.model.get_submodule(path)
        scaling = float(layer.scaling[adapter_name])  # PEFT's own alpha / rank
        adapters[path] = ModuleAdapter(params[name], params[path + B_SUFFIX], scaling)
    batches = trainer.training_batches(job.batch_size, job.seed, job.data_seed, job.data_offset)
    return _Client(job, number, names, [params[n] for n in names], adapters, batches)


def _width(items: Sequence[Encoded]) -> int:
    return max(len(item.input_ids) for item in items)


def _pack(
    clients: Sequence[_Client],
    batches: Sequence[list[Encoded]],
    cap: int | None,
    tokens: int,
) -> list[tuple[list[Encoded], list[Segment]]]:
    """Group the clients' batches into shared forwards, each client's rows kept together.

    Batches of similar length go together (sorted by width), and a forward takes in another
    client's rows only while it pads at most ``PAD_SLACK`` times the tokens those clients pad
    alone: one long example must not make every client pay its length. ``cap`` (the micro-batch)
    bounds a forward's rows, ``tokens`` its padded tokens (a client's own batch may exceed the
    latter, as it does training alone); a client's batch larger than ``cap`` is split as
    ``train`` splits it.
    """
    blocks: list[tuple[int, list[Encoded]]] = []
    for client, items in zip(clients, batches, strict=True):
        size = cap or len(items)
        blocks += [(client.number, items[b : b + size]) for b in range(0, len(items), size)]
    blocks.sort(key=lambda block: _width(block[1]))
    groups: list[list[tuple[int, list[Encoded]]]] = [[]]
    rows = alone = 0
    for number, items in blocks:
        width, count = _width(items), len(items)
        padded = (rows + count) * width
        grown = padded > PAD_SLACK * (alone + count * width) or padded > tokens
        if groups[-1] and (grown or (cap is not None and rows + count > cap)):
            groups.append([])
            rows = alone = 0
        groups[-1].append((number, items))
        rows, alone = rows + count, alone + count * width
    out = []
    for group in groups:
        segments, start = [], 0
        for number, items in group:
            segments.append(Segment(number, start, start + len(items)))
            start += len(items)
        out.append(([item for _, items in group for item in items], segments))
    return out


def _optimizers(clients: Sequence[_Client]) -> list[torch.optim.Optimizer]:
    """One optimizer per kind, a parameter group per client (its own lr and state)."""
    out = []
    for kind in sorted({c.job.optimizer for c in clients}):
        members = [c for c in clients if c.job.optimizer == kind]
        groups = [{"params": c.params, "lr": c.job.lr} for c in members]
        foreach = foreach_for([p for c in members for p in c.params])
        out.append(make_optimizer(kind, groups, foreach))
    return out


def train_together(jobs: Sequence[TrainJob]) -> list[JobResult]:
    """Run every job's local training in shared forward/backward passes; results in job order.

    All jobs must train on one shared model (the simulator's virtual clients do). The model's
    own adapters are left as they were: each job trains copies of its factors.
    """
    if not jobs:
        return []
    lead = jobs[0].trainer
    bundle = lead.bundle
    if any(job.trainer.bundle is not bundle for job in jobs):
        raise ValueError("jobs trained together must share one model")
    for job in jobs:
        _check(job)
    active_spec = bundle.lora_spec
    clients = [_client(number, job, bundle.device) for number, job in enumerate(jobs)]
    if active_spec is not None:
        lead.use_lora(active_spec)
    optimizers = _optimizers(clients)
    forward_tokens = FORWARD_TOKENS.get(bundle.device.type, FORWARD_TOKENS["cuda"])
    pad_id = bundle.tokenizer.pad_token_id
    model = lead.model
    model.train()
    with torch.random.fork_rng(devices=[]), GroupedLora(model, [c.adapters for c in clients]) as g:
        torch.manual_seed(jobs[0].seed % (1 << 63))  # dropout, if any model layer has it
        for step in range(max(job.steps for job in jobs)):
            stepping = [c for c in clients if step < c.job.steps]
            drawn = [next(c.batches) for c in stepping]
            tokens = {
                c.number: sum(map(_answer_count, b)) for c, b in zip(stepping, drawn, strict=True)
            }
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            for items, segments in _pack(stepping, drawn, lead.micro_batch, forward_tokens):
                g.set_segments(segments)
                batch = collate(items, pad_id)
                with lead.autocast_context():
                    losses = segment_losses(model, batch, [(s.start, s.stop) for s in segments])
                objective = sum(
                    loss / max(tokens[s.client], 1)
                    for loss, s in zip(losses, segments, strict=True)
                )
                objective.backward()  # type: ignore[union-attr]
                for loss, s in zip(losses, segments, strict=True):
                    clients[s.client].loss += float(loss.detach())
            for client, items in zip(stepping, drawn, strict=True):
                if client.job.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(
                        client.params, client.job.max_grad_norm, foreach=foreach_for(client.params)
                    )
                client.tokens += tokens[client.number]
                client.examples += len(items)
            for optimizer in optimizers:
                optimizer.step()
    model.eval()
    return [
        JobResult(
            TrainStats(
                steps=c.job.steps,
                examples=c.examples,
                loss=c.loss / c.tokens if c.tokens else math.nan,
            ),
            {
                n: p.detach().to("cpu", torch.float32, copy=True)
                for n, p in zip(c.names, c.params, strict=True)
            },
        )
        for c in clients
    ]
