"""What Ferret's projection costs: eval loss of the local model vs of its seeded reconstruction.

One client (the first of the category split) trains locally from the base model; its update
``delta = old - new`` is projected block by block onto ``K`` seeded bases and rebuilt exactly as
the server would, with one client and server lr 1. The table shows, per setting, the eval loss
of the base, of the local model and of the reconstruction, plus the reconstruction's relative
error ``|rebuilt - delta| / |delta|`` and the seconds spent. Measures; asserts nothing.

Examples::

    python benchmarks/ferret_projection.py
    python benchmarks/ferret_projection.py --model tiny --setting adamw:1e-3:all:64
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from fedft.kernels.seed_ops import FlatParams, apply_seeds_
from fedft.runtime.evaluation import held_out_loss
from fedft.runtime.models import load_model
from fedft.runtime.trainer import LocalTrainer
from fedft.simulation.data_split import split_data
from fedft.simulation.spec import SimulationSpec
from fedft.strategies.ferret.projection import Projection, project_blocks
from fedft.strategies.seedpool.pool import pool_seeds
from fedft.strategies.seedpool.trainable import block_ends, flat_trainable, select_parameters

DEFAULT_SETTINGS = (
    "sgd:1e-3:self_attn:64",
    "adamw:1e-5:self_attn:64",
    "adamw:3e-5:self_attn:64",
    "adamw:1e-4:self_attn:64",
    "adamw:1e-5:all:64",
    "adamw:1e-4:all:64",
)


@dataclass(frozen=True)
class Setting:
    """One local-training configuration: optimizer, lr, trainable set, pool size K."""

    optimizer: str
    lr: float
    trainable: str
    seeds: int

    @classmethod
    def parse(cls, text: str) -> Setting:
        """Parse ``optimizer:lr:trainable:K``."""
        try:
            optimizer, lr, trainable, seeds = text.split(":")
            return cls(optimizer, float(lr), trainable, int(seeds))
        except ValueError as exc:
            raise SystemExit(f"--setting expects optimizer:lr:trainable:K, got {text!r}") from exc


def rebuild(params: FlatParams, proj: Projection, ends: list[int], seeds: tuple[int, ...]) -> None:
    """Apply ``-sum gamma z`` per block, as the server does with one client and lr 1."""
    starts = [0, *ends[:-1]]
    for block, (start, end) in enumerate(zip(starts, ends, strict=True)):
        mask = proj.block == block
        chosen = [seeds[i] for i in proj.index[mask].tolist()]
        coeffs = [-float(c) for c in proj.coeff[mask]]
        apply_seeds_(params, chosen, coeffs, "irwin_hall", start=start, end=end)


def main() -> None:
    """Run each setting from the same base model and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--setting", action="append", help="optimizer:lr:trainable:K (repeat)")
    parser.add_argument("--steps", type=int, default=5, help="local steps of batch 4")
    parser.add_argument("--eval-examples", type=int, default=48)
    args = parser.parse_args()
    settings = [Setting.parse(s) for s in args.setting or DEFAULT_SETTINGS]

    data = split_data(SimulationSpec(model=args.model, clients=4, rounds=1, strategy="ferret"))
    bundle = load_model(args.model)
    trainer = LocalTrainer(bundle, data.clients[min(data.clients)])
    eval_set = data.eval_set[: args.eval_examples]

    table = Table(title=f"Ferret projection on {args.model}, {args.steps} local steps of batch 4")
    for column in ("optimizer", "lr", "trainable", "K", "blocks", "bases", "base loss"):
        table.add_column(column, justify="right")
    for column in ("local loss", "rebuilt loss", "rel. error", "train s", "project s"):
        table.add_column(column, justify="right")
    for setting in settings:
        chosen = select_parameters(bundle.model, setting.trainable)
        for name, param in bundle.model.named_parameters():
            param.requires_grad_(name in chosen)
        params = flat_trainable(bundle.model, setting.trainable)
        ends = block_ends(params)
        seeds = pool_seeds(42, setting.seeds)
        start = params.snapshot()
        base = held_out_loss(bundle, eval_set).loss
        clock = time.perf_counter()
        trainer.train(
            steps=args.steps, batch_size=4, lr=setting.lr, seed=1, optimizer=setting.optimizer
        )
        train_s = time.perf_counter() - clock
        local = held_out_loss(bundle, eval_set).loss
        delta = start - params.snapshot()
        params.restore(start)
        clock = time.perf_counter()
        proj = project_blocks(delta, ends, seeds, "irwin_hall", torch.Generator().manual_seed(1))
        project_s = time.perf_counter() - clock
        rebuild(params, proj, ends, seeds)
        rebuilt = held_out_loss(bundle, eval_set).loss
        error = float((start - params.snapshot() - delta).norm() / delta.norm())
        params.restore(start)
        table.add_row(
            setting.optimizer,
            f"{setting.lr:g}",
            setting.trainable,
            str(setting.seeds),
            str(len(ends)),
            str(proj.index.numel()),
            f"{base:.4f}",
            f"{local:.4f}",
            f"{rebuilt:.4f}",
            f"{error:.0f}x",
            f"{train_s:.0f}",
            f"{project_s:.0f}",
        )
    Console(width=180).print(table)


if __name__ == "__main__":
    main()
