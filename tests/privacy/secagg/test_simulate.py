"""The in-process adapter: exact and float sums, bytes per client and stage, CPU counted."""

from __future__ import annotations

import numpy as np
import torch

from fedft.privacy.secagg.encoding import Encoding
from fedft.privacy.secagg.simulate import STAGES, secure_sum


def test_integer_vectors_sum_exactly() -> None:
    rng = np.random.default_rng(3)
    xs = [rng.integers(-2, 3, size=32).astype(np.float64) for _ in range(10)]
    ws = [float(w) for w in rng.integers(1, 9, size=10)]
    total, st = secure_sum(xs, ws, encoding=Encoding(32, 12, 2.0, 8.0))
    assert np.array_equal(total, np.sum([w * x for w, x in zip(ws, xs, strict=True)], axis=0))
    assert st.total_weight == sum(ws)
    assert st.survivors == tuple(range(10))


def test_float_update_vectors_sum_to_the_encoding_precision() -> None:
    # Update vectors as LinearUpdates.update_vector returns them: float64 torch tensors.
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(200, generator=gen, dtype=torch.float64) * 0.3 for _ in range(12)]
    ws = [float(n) for n in range(1, 13)]
    total, st = secure_sum(xs, ws, seed=7)
    enc = st.config.encoding
    assert enc.frac_bits >= 20  # Encoding.fit leaves only the headroom 12 clients need
    plain = np.sum([w * np.clip(x.numpy(), -1, 1) for w, x in zip(ws, xs, strict=True)], axis=0)
    assert np.max(np.abs(total - plain)) <= 12 / enc.scale
    mean = total / st.total_weight
    assert np.allclose(mean, plain / sum(ws), atol=1e-4)


def test_bytes_are_counted_per_client_and_stage_and_grow_with_the_degree_only() -> None:
    length = 100
    xs = [np.zeros(length) for _ in range(32)]
    _, small = secure_sum(xs[:16], neighbours=6)
    _, large = secure_sum(xs, neighbours=6)
    for stage in STAGES:
        assert small.sent[(0, stage)] > 0
        # What starts a stage: none for advertise (the config is public), then the relays.
        assert ((0, stage) in small.received) == (stage != "advertise")
    assert small.sent[(0, "mask")] == 8 + 4 * (length + 1)
    # Same degree, twice the clients: the same traffic per client (O(k), not O(n)).
    assert small.client_bytes(0) == large.client_bytes(0)
    assert all(cpu > 0 for cpu in large.client_cpu.values())
    assert large.server_cpu > 0
