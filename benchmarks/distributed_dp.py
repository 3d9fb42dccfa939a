"""Distributed DP beside central DP under SecAgg+: epsilon, device CPU and bytes, one run.

For the embedded LoRA adapter (2.44 M values) and FedKSeed's 4,096 seed coefficients it fits
the encoding ``--dp-distributed`` uses (``NoisyEncoding.fit_noise``), then reports:

- epsilon at delta 1e-5 after R rounds: central DP (Gaussian, PLD and RDP) against distributed
  DP (Skellam, RDP with the general subsampling bound), same noise multiplier, clip and rate;
- one device's encoding CPU: plain fixed point against fixed point plus its Skellam share;
- one device's masked upload: central DP's ring (the strategy's) against distributed DP's (the
  strategy's when the noisy sum fits it at full precision, else 64 bits).

Prints a markdown table; measures and asserts nothing.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distributed_dp.py
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np

from fedft.privacy.accounting import PLD, RDP, epsilon
from fedft.privacy.config import DPConfig
from fedft.privacy.ledger import ADD_REMOVE, GAUSSIAN, SKELLAM, LedgerEntry
from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.linear import min_survivors, noisy_encoding
from fedft.privacy.secagg.noisy import NoisyEncoding
from fedft.privacy.secagg.settings import SecAggSettings
from fedft.strategies.fedavg_lora import FedAvgLoRAServer
from fedft.strategies.fedkseed import FedKSeedServer

SIZES = {"fedkseed": (4096, FedKSeedServer), "lora": (2_442_240, FedAvgLoRAServer)}
CLIP = 0.05


def ledgers(
    rounds: int, z: float, rate: float, enc: NoisyEncoding, survivors: int
) -> tuple[list[LedgerEntry], list[LedgerEntry]]:
    """A central and a distributed ledger of ``rounds`` equal rounds."""
    central = LedgerEntry(1, GAUSSIAN, z, CLIP, rate, survivors, ADD_REMOVE, 0.0, "secagg")
    realised = enc.noise_multiplier(survivors)
    dist = LedgerEntry(
        1,
        SKELLAM,
        realised,
        CLIP,
        rate,
        survivors,
        ADD_REMOVE,
        0.0,
        "secagg",
        enc.l2_sensitivity,
        enc.l1_sensitivity,
    )
    return [central] * rounds, [dist] * rounds


def cpu(encoding: Encoding, vector: np.ndarray, repeats: int) -> float:
    """Mean CPU seconds of one device's encoding."""
    rng = np.random.default_rng(0)
    start = time.process_time()
    for _ in range(repeats):
        encoding.encode(vector, 1.0, rng)
    return (time.process_time() - start) / repeats


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="participants per round")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--noise", type=float, default=1.0, help="noise multiplier z")
    parser.add_argument("--rate", type=float, default=0.1, help="client sampling rate")
    args = parser.parse_args()
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's fractional orders
    n = args.clients
    survivors = min_survivors(0, n)
    print(
        f"{n} participants, noise calibrated for {survivors} survivors, z = {args.noise}, "
        f"clip {CLIP}, sampling rate {args.rate}, {args.rounds} rounds, delta 1e-5\n"
    )
    print(
        "| update | frac bits | rounding inflation | eps central PLD | eps central RDP "
        "| eps distributed RDP | encode CPU central | encode CPU distributed "
        "| upload central | upload distributed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (length, strategy) in SIZES.items():
        config = DPConfig(noise_multiplier=args.noise, clip=CLIP, distributed=True)
        enc = noisy_encoding(
            SecAggSettings(), config, n, length=length, strategy_ring=strategy.secagg_ring_bits
        )
        plain = Encoding.fit(n, clip=CLIP, max_weight=1.0, ring_bits=strategy.secagg_ring_bits)
        central, dist = ledgers(args.rounds, args.noise, args.rate, enc, survivors)
        vector = np.random.default_rng(1).standard_normal(length) * (CLIP / math.sqrt(length))
        repeats = 3 if length > 100_000 else 50
        inflation = math.sqrt(length) / (enc.scale * CLIP)
        eps = [epsilon(central, 1e-5, PLD), epsilon(central, 1e-5, RDP), epsilon(dist, 1e-5, RDP)]
        up_plain = (length + 1) * plain.dtype.itemsize
        up_dist = (length + 1) * enc.dtype.itemsize
        print(
            f"| {name} ({length:,} values) | {enc.frac_bits} | {inflation:.2%} | "
            + " | ".join(f"{e:.3f}" for e in eps if e is not None)
            + f" | {cpu(plain, vector, repeats) * 1e3:.1f} ms | "
            f"{cpu(enc, vector, repeats) * 1e3:.1f} ms | {up_plain / 1e6:.3f} MB | "
            f"{up_dist / 1e6:.3f} MB |"
        )


if __name__ == "__main__":
    main()
