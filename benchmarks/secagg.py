"""SecAgg+ in one process: per-client bytes and CPU, server CPU, against the plain round.

For each client count and update size it runs ``fedft.privacy.secagg.simulate.secure_sum``
(every message built, sealed, verified and counted) and the plain weighted sum of the same
vectors. Bytes: SecAgg counts everything a client sends and receives in the four stages; plain
counts the update upload (float32 values + one float32 weight), the only aggregation traffic of
a round without SecAgg (the model download is the same in both and left out). Each size is
encoded as ``--secagg`` encodes its strategy (clip and ring of ``LinearUpdates.secagg_*``,
weights scaled so the largest is 1). Prints a markdown table; measures and asserts nothing.

    # 10/100/1000 clients x 16 KB, 10/100 x 9.8 MB:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/secagg.py
    # also 1000 x 9.8 MB (minutes):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/secagg.py --full
    # 10% of the clients vanish before the masked input:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/secagg.py --drop 0.1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.simulate import secure_sum
from fedft.strategies.fedavg_lora import FedAvgLoRAServer
from fedft.strategies.fedkseed import FedKSeedServer

# FedKSeed's update vector is one scalar per seed (K = 4096); fedavg_lora's adapter on
# SmolLM2-135M in the embedded demo has 2.44 M parameters, 9.8 MB in float32 (docs/results.md).
SIZES = {"fedkseed": 4096, "lora": 2_442_240}
# What --secagg encodes each with: the strategy's clip and ring (LinearUpdates.secagg_*).
STRATEGIES = {"fedkseed": FedKSeedServer, "lora": FedAvgLoRAServer}
MAX_WEIGHT = 64  # example counts are drawn from [1, MAX_WEIGHT]


class Updates(Sequence[np.ndarray]):
    """Client i's update, generated on demand so that 1,000 large vectors never sit in memory."""

    def __init__(self, n: int, length: int) -> None:
        """Describe ``n`` updates of ``length`` values."""
        self.n, self.length = n, length

    def __len__(self) -> int:
        """Return the number of clients."""
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        """Return client i's update: small float32 normals, as a model delta looks."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.random.default_rng(i).standard_normal(self.length, dtype=np.float32) * 0.01


def plain(updates: Updates, weights: list[float]) -> tuple[np.ndarray, float, float, int]:
    """Return the plain weighted sum, per-client and server CPU seconds, and upload bytes."""
    client_cpu = server_cpu = 0.0
    total = np.zeros(updates.length, dtype=np.float64)
    for i, w in enumerate(weights):
        x = updates[i]
        t0 = time.thread_time()
        wire = x.astype(np.float32).tobytes()  # what the client serialises and sends
        client_cpu += time.thread_time() - t0
        t0 = time.thread_time()
        total += w * np.frombuffer(wire, dtype=np.float32)
        server_cpu += time.thread_time() - t0
    return total, client_cpu / len(weights), server_cpu, 4 * updates.length + 4


def run(n: int, size: str, drop: float) -> dict[str, float | int | str]:
    """Measure one (clients, size) point."""
    length = SIZES[size]
    updates = Updates(n, length)
    rng = np.random.default_rng(n)
    counts = [float(w) for w in rng.integers(1, MAX_WEIGHT + 1, size=n)]
    weights = [w / max(counts) for w in counts]  # as task_weights scales them
    gone = set(rng.choice(n, size=int(drop * n), replace=False).tolist())
    strategy = STRATEGIES[size]
    enc = Encoding.fit(
        n, clip=strategy.secagg_clip, max_weight=1.0, ring_bits=strategy.secagg_ring_bits
    )
    wall = time.perf_counter()
    total, st = secure_sum(
        updates, weights, encoding=enc, dropouts={"mask": gone}, session="bench", seed=0
    )
    wall = time.perf_counter() - wall
    keep = [w if i not in gone else 0.0 for i, w in enumerate(weights)]
    ref, p_client, p_server, p_bytes = plain(updates, keep)
    per_client = [st.client_bytes(c) for c in st.survivors]
    cpu = [st.client_cpu[c] for c in st.survivors]
    mean_err = float(np.max(np.abs(total / st.total_weight - ref / sum(keep))))
    return {
        "clients": n,
        "size": f"{size} ({4 * length / 1e3:,.0f} KB)",
        "k": st.config.neighbours,
        "t": st.config.threshold,
        "ring": enc.ring_bits,
        "frac_bits": enc.frac_bits,
        "bytes": int(np.mean(per_client)),
        "plain_bytes": p_bytes,
        "ratio": float(np.mean(per_client)) / p_bytes,
        "client_cpu": float(np.mean(cpu)),
        "client_cpu_max": float(np.max(cpu)),
        "plain_client_cpu": p_client,
        "server_cpu": st.server_cpu,
        "plain_server_cpu": p_server,
        "mean_err": mean_err,
        "wall": wall,
    }


def main() -> None:
    """Parse flags, run every point, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--full", action="store_true", help="also 9.8 MB at 1,000 clients")
    parser.add_argument("--drop", type=float, default=0.0, help="fraction dropping at stage 3")
    args = parser.parse_args()
    points = [(n, "fedkseed") for n in args.clients]
    points += [(n, "lora") for n in args.clients if n <= 100 or args.full]
    print(
        "| clients | update | k | t | ring | frac bits | bytes/client | plain | ratio "
        "| client CPU s (mean / max) | plain client CPU s | server CPU s | plain server CPU s "
        "| max error of the mean |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, size in points:
        r = run(n, size, args.drop)
        print(
            f"| {r['clients']} | {r['size']} | {r['k']} | {r['t']} | 2^{r['ring']} "
            f"| {r['frac_bits']} "
            f"| {r['bytes']:,} | {r['plain_bytes']:,} | {r['ratio']:.3f} "
            f"| {r['client_cpu']:.3f} / {r['client_cpu_max']:.3f} | {r['plain_client_cpu']:.4f} "
            f"| {r['server_cpu']:.2f} | {r['plain_server_cpu']:.2f} | {r['mean_err']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
